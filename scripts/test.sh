#!/usr/bin/env bash
# THE test command: scripts/test.sh [extra nextest args, e.g. -E 'test(ack)']
# Provisions what the tests need (Postgres, pinned nats-server, Node packages), then runs
# the same gates as CI: fmt, clippy, debug build, nextest, the client library's tests.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

start=$SECONDS
# Each stage's time, printed at the end (also when a stage fails).
stages=()
report() {
  local code=$?
  for stage in "${stages[@]}"; do log "  $stage"; done
  log "finished with exit code $code in $((SECONDS - start)) s"
}
trap report EXIT

ensure_test_tools
cd "$ROOT"

step() {
  local began=$SECONDS
  log "+ $*"
  "$@" || { stages+=("$((SECONDS - began)) s  FAILED: $*"); die "failed: $*"; }
  stages+=("$((SECONDS - began)) s  $*")
}
# Runs each command (a string) in the background, then prints each one's output in
# order; fails if any failed.
side_by_side() {
  local dir pids=() failed=0 i
  dir=$(mktemp -d)
  for i in $(seq 0 $(($# - 1))); do
    local cmd=${*:$((i + 1)):1}
    bash -c "$cmd" >"$dir/$i.log" 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then failed=1; log "FAILED: ${*:$((i + 1)):1}"; fi
    cat "$dir/$i.log"
  done
  rm -rf "$dir"
  return "$failed"
}
stages+=("$((SECONDS - start)) s  provisioning (Postgres, nats-server, Node packages)")
step cargo fmt --all -- --check
# Every "§N" cited in code and docs must be a numbered section of docs/.
step python3 scripts/check-refs.py
step cargo clippy --workspace --all-targets -- -D warnings
# e2e tests spawn the real binaries, so build them before nextest runs the tests.
step cargo build --workspace
export COACHWIRE_BIN_DIR=$CARGO_TARGET_DIR/debug
# One run: the scenarios that measure under load (faults, leaks, slow sockets) form a
# test group that runs two at a time beside the rest (.config/nextest.toml).
step cargo nextest run --workspace --no-fail-fast --no-tests=warn "$@"
# The client library (clients/js) with its coach bot, and the web demo in headless
# Chromium (clients/web), against the same debug binaries through coachwire-harness;
# skipped when nextest was given a filter.
if [ $# -eq 0 ]; then
  # Built once, first: both suites use clients/js's build, and two builds at once would
  # write the same files. Then the two suites (each starts stacks of its own) and the
  # randomized fault soak (docs/reliability.md) run side by side; their output is printed
  # whole, one after the other. The soak is short: every fault kind at least once, with a
  # fresh seed each run (printed first; --seed replays it). It paces itself by the clock,
  # so the suites beside it do not shorten what it covers.
  step npm --prefix clients/js run build
  step npm --prefix clients/web run build
  step side_by_side "npm --prefix clients/js test --ignore-scripts" \
    "npm --prefix clients/web test --ignore-scripts" \
    "$COACHWIRE_BIN_DIR/coachwire-soak --minutes 1"
fi
