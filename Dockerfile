# convey-relay: rendezvous, tracker, WebSocket tunnel (TCP 4790) and STUN (UDP 3478).
#
#   docker build -t convey-relay .          # builds the relay from source (stage `build`)
#   docker run -d --name convey-relay -p 4790:4790 -p 3478:3478/udp convey-relay
#
# Stages, in an order that lets the classic builder (which builds every stage before the
# target) build `prebuilt` without the Rust toolchain image:
#   runtime-base  the runtime image's every setting: user, environment, ports, health
#   prebuilt      runtime-base + a binary from the build context (CI: deploy/image-test.sh)
#   build         the release build, with the same script CI runs (deploy/build-relay.sh)
#   runtime       runtime-base + the binary from `build` (the default target)
FROM debian:bookworm-slim AS runtime-base
RUN useradd --system --uid 10001 --no-create-home convey
USER 10001
# Every setting is a CONVEY_RELAY_* variable (see `convey-relay --help`).
ENV CONVEY_RELAY_LISTEN=0.0.0.0:4790 \
    CONVEY_RELAY_STUN_LISTEN=[::]:3478
EXPOSE 4790/tcp 3478/udp
HEALTHCHECK --interval=30s --timeout=6s CMD ["convey-relay", "--health-check"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["convey-relay"]

FROM runtime-base AS prebuilt
COPY convey-relay /usr/local/bin/convey-relay

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN bash deploy/build-relay.sh /out

FROM runtime-base AS runtime
COPY --from=build /out/convey-relay /usr/local/bin/convey-relay
