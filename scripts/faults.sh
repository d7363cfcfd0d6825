#!/usr/bin/env bash
# The fault suite alone, as many times as asked: scripts/faults.sh [RUNS] [extra nextest args]
#   scripts/faults.sh                 # every fault scenario once (also part of scripts/test.sh)
#   scripts/faults.sh 5 -E 'test(persister)'   # the persister scenarios, five times over
# Each scenario prints its seed; COACHWIRE_FAULT_SEED=<seed> replays one's fault times.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runs=${1:-1}
[ $# -eq 0 ] || shift
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "usage: scripts/faults.sh [RUNS] [nextest args]"

ensure_test_tools
cd "$ROOT"
cargo build --workspace || die "cargo build failed"
export COACHWIRE_BIN_DIR=$CARGO_TARGET_DIR/debug
for run in $(seq 1 "$runs"); do
  log "fault suite, run $run of $runs"
  cargo nextest run -p coachwire-testkit --test e2e -E 'test(/^(faults|db_faults)::/)' --no-capture "$@" ||
    die "fault suite failed in run $run"
done
