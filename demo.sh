#!/usr/bin/env bash
# One command, no set-up: build convey, then send a 50 MB random file to yourself through
# the relay that `convey send` embeds when no relay is configured, and check it arrived.
set -euo pipefail
cd "$(dirname "$0")"
# One machine: no need to advertise the sender on the LAN (and no multicast from CI).
export CONVEY_LAN=off
cargo build --release --locked -q -p convey
bin="${CARGO_TARGET_DIR:-$PWD/target}/release/convey"
work=$(mktemp -d)
sender=""
cleanup() { [ -n "$sender" ] && kill "$sender" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
head -c 50000000 /dev/urandom > "$work/demo.bin"

"$bin" send "$work/demo.bin" > "$work/send.out" &
sender=$!
for _ in $(seq 100); do grep -q '^Code: ' "$work/send.out" 2>/dev/null && break; sleep 0.1; done
cat "$work/send.out"
code=$(sed -n 's/^Code: //p' "$work/send.out")
[ -n "$code" ] || { echo "demo: the sender printed no code" >&2; exit 1; }

if grep -q '^(on this machine:' "$work/send.out"; then
  # The embedded relay got the default port: the receiver needs no relay address at all.
  "$bin" receive --yes --out "$work/received" "$code"
else
  relay=$(sed -n 's/.*--relay \([^ ]*\) .*/\1/p' "$work/send.out" | head -1)
  "$bin" receive --yes --relay "$relay" --out "$work/received" "$code"
fi
wait "$sender"; sender=""
cmp "$work/demo.bin" "$work/received/demo.bin"
echo "demo: OK, the file arrived byte-identical"
