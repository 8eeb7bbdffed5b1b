#!/usr/bin/env bash
# The relay's release build, exactly as the Dockerfile runs it (CI runs this script too,
# since this machine has no container engine). Usage: deploy/build-relay.sh OUT_DIR
set -euo pipefail
out="${1:?usage: deploy/build-relay.sh OUT_DIR}"
cd "$(dirname "$0")/.."
cargo build --release --locked -p convey-relay
target="${CARGO_TARGET_DIR:-$PWD/target}"
install -D -m 0755 "$target/release/convey-relay" "$out/convey-relay"
"$out/convey-relay" --version
