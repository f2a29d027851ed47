#!/usr/bin/env bash
# Every check the project has, in the order that fails fastest: format, lints, all tests
# (unit, integration against the real binary, browser), then the shared conformance suite
# against the release binary on a free port, then the benchmark harness in smoke mode.
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${AOP_SHARED:-../shared}"

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --release -- -D warnings

step "cargo test (release profile: the same binary the conformance suite runs)"
cargo test --release

step "conformance suite against target/release/aop"
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
HOME="$work" ./target/release/aop start --port 0 --db "$work/events.db" --no-open >"$work/out.log" 2>"$work/err.log" &
pid=$!
addr=""
for _ in $(seq 1 100); do
  addr=$(grep -o 'listening addr=[0-9.:]*' "$work/err.log" | head -n1 | cut -d= -f2 || true)
  [ -n "$addr" ] && break
  sleep 0.1
done
if [ -z "$addr" ]; then
  echo "the collector did not start:"; cat "$work/out.log" "$work/err.log"; exit 1
fi
python3 "$shared/conformance/aop_conformance.py" --base "http://$addr"

step "aop bench --smoke (keeps the harness working; prints figures, asserts none)"
./target/release/aop bench --smoke --url "http://$addr" --binary ./target/release/aop --db "$work/startup.db"
kill -TERM "$pid"
wait "$pid"
echo "collector exited cleanly after SIGTERM"
