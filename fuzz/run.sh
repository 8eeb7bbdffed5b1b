#!/usr/bin/env bash
# Run every fuzz target for a bounded time (default 180 s each), with cargo-fuzz on the
# nightly toolchain; each target's corpus grows in fuzz/corpus/<target>, crashes land in
# fuzz/artifacts/<target>. Prints each target's executions per second from libFuzzer's last
# status line. Usage: fuzz/run.sh [SECONDS] [TARGET...]
# Needs: rustup toolchain nightly, `cargo install cargo-fuzz`.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-180}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(code rendezvous peer_msg manifest torrent stream_frames push_items tunnel_header tracker_query tracker_fast_path)
fi
# No sanitizer: the parsers are safe Rust; what the fuzzer looks for is panics and hangs.
# The instrumented build gets its own target dir so it never invalidates the normal one.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/var/tmp/convey-fuzz-target}"
opts=(--fuzz-dir fuzz --features libfuzzer --sanitizer none --release)
cargo +nightly fuzz build "${opts[@]}"
status=0
for t in "${targets[@]}"; do
  log=$(mktemp)
  # -timeout: an input that takes over 10 s is a hang; -rss_limit_mb bounds memory.
  if cargo +nightly fuzz run "${opts[@]}" "$t" "fuzz/corpus/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=CRASH
    status=1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  echo "$t: $result, $runs executions in ${secs}s ($((runs / secs))/s), corpus $(ls "fuzz/corpus/$t" | wc -l) files"
  [ "$result" = ok ] || tail -40 "$log"
  rm -f "$log"
done
exit $status
