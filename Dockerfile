# convey-relay: rendezvous, tracker, WebSocket tunnel (TCP 4790) and STUN (UDP 3478).
# The build stage runs deploy/build-relay.sh, the same script CI runs.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN bash deploy/build-relay.sh /out

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home convey
COPY --from=build /out/convey-relay /usr/local/bin/convey-relay
USER 10001
# Every setting is a CONVEY_RELAY_* variable (see `convey-relay --help`).
ENV CONVEY_RELAY_LISTEN=0.0.0.0:4790 \
    CONVEY_RELAY_STUN_LISTEN=0.0.0.0:3478
EXPOSE 4790/tcp 3478/udp
HEALTHCHECK --interval=30s --timeout=6s CMD ["convey-relay", "--health-check"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["convey-relay"]
