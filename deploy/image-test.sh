#!/usr/bin/env bash
# Build the relay image from the real Dockerfile and run it: a local Docker engine (Debian's
# docker.io, no bridge, host networking), a base image made with debootstrap (no registry
# is reachable), the Dockerfile's `prebuilt` target (the runtime stage, with the binary
# that deploy/build-relay.sh built outside), then: wait for the health check to say
# healthy, send a file through the containerised relay, and remove everything created.
# Usage: deploy/image-test.sh RELAY_BINARY CONVEY_BINARY   (as root)
set -euo pipefail
relay_bin="${1:?usage: deploy/image-test.sh RELAY_BINARY CONVEY_BINARY}"
convey_bin="${2:?usage: deploy/image-test.sh RELAY_BINARY CONVEY_BINARY}"
cd "$(dirname "$0")/.."

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

work=$(mktemp -d)
data="$work/docker"
sock="$work/docker.sock"
export DOCKER_HOST="unix://$sock"
image="convey-relay:image-test-$$"
container=""
dockerd_pid=""
cleanup() {
  [ -n "$container" ] && docker rm -f "$container" >/dev/null 2>&1 || true
  docker rmi -f "$image" debian:bookworm-slim >/dev/null 2>&1 || true
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$dockerd_pid" 2>/dev/null || true
  fi
  # dockerd leaves bind mounts (its netns, overlay layers) under its roots: deepest first.
  grep -o " $work/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$work" || true
}
trap cleanup EXIT

# An engine of our own: its own data root and socket, no bridge on a private range, no
# iptables rules, containers on the host network only.
dockerd --data-root "$data" --host "$DOCKER_HOST" --exec-root "$work/exec" --pidfile "$work/docker.pid" \
  --bridge=none --iptables=false --ip6tables=false >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 300); do docker info >/dev/null 2>&1 && break; sleep 0.1; done
docker info >/dev/null 2>&1 || { cat "$work/dockerd.log" >&2; echo "image-test: dockerd did not start" >&2; exit 1; }

# The base image: Debian bookworm minbase from Debian's archive (the rootfs tarball is
# cached beside the build cache, so warm runs skip debootstrap).
rootfs_tar="${CONVEY_ROOTFS_CACHE:-/var/tmp/convey-bookworm-minbase.tar}"
if [ ! -s "$rootfs_tar" ]; then
  debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  tar -C "$work/rootfs" -cf "$rootfs_tar.part" . && mv "$rootfs_tar.part" "$rootfs_tar"
  rm -rf "$work/rootfs"
fi
docker import - debian:bookworm-slim < "$rootfs_tar" >/dev/null

# The real Dockerfile's runtime stage, with the binary built outside as its context.
ctx="$work/context"
mkdir -p "$ctx"
install -m 0755 "$relay_bin" "$ctx/convey-relay"
docker build -q --target prebuilt -f Dockerfile -t "$image" "$ctx" >/dev/null

port=$((20000 + RANDOM % 20000))
container=$(docker run -d --network host --health-interval=1s \
  -e CONVEY_RELAY_LISTEN="127.0.0.1:$port" -e CONVEY_RELAY_STUN_LISTEN=off "$image")
[ "$(docker inspect -f '{{.Config.User}}' "$container")" = 10001 ] || { echo "image-test: not running as uid 10001" >&2; exit 1; }
status=""
for _ in $(seq 300); do
  status=$(docker inspect -f '{{.State.Health.Status}}' "$container")
  [ "$status" = healthy ] && break
  sleep 0.1
done
[ "$status" = healthy ] || { docker logs "$container" >&2; echo "image-test: the container never became healthy ($status)" >&2; exit 1; }

# A transfer through the containerised relay.
head -c 5000000 /dev/urandom > "$work/payload.bin"
CONVEY_LAN=off "$convey_bin" send --relay "127.0.0.1:$port" "$work/payload.bin" > "$work/send.out" 2>/dev/null &
sender=$!
for _ in $(seq 100); do grep -q '^Code: ' "$work/send.out" 2>/dev/null && break; sleep 0.1; done
code=$(sed -n 's/^Code: //p' "$work/send.out")
[ -n "$code" ] || { kill "$sender"; echo "image-test: the sender printed no code" >&2; exit 1; }
CONVEY_LAN=off timeout 60 "$convey_bin" receive --yes --relay "127.0.0.1:$port" --out "$work/got" "$code"
wait "$sender"
cmp "$work/payload.bin" "$work/got/payload.bin"
if docker logs "$container" 2>&1 | grep -q $'\e\['; then
  echo "image-test: the relay's log lines carry colour codes in docker logs" >&2; exit 1
fi
echo "relay image: built from the Dockerfile (target prebuilt), healthy as uid 10001, a transfer through it arrived intact"
