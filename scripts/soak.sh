#!/usr/bin/env bash
# The randomized fault soak of the production shape (docs/reliability.md):
#   scripts/soak.sh                                   # 2 minutes, 200 msg/s, every fault kind
#   scripts/soak.sh --minutes 10 --rate 300 --seed 42 # seed 42's schedule, for 10 minutes
#   scripts/soak.sh --faults kill,pause,nats-crash    # only these kinds
#   scripts/soak.sh --release --minutes 30 --rate 500 # release binaries (the published run)
# Other flags go to coachwire-soak (--help lists them). The report is printed and written
# as JSON (--json, default .run/soak/report.json); the exit status is non-zero on any
# anomaly. The short soak of scripts/test.sh is `--minutes 1` with a fresh seed.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

profile=debug
if [ "${1:-}" = "--release" ]; then profile=release; shift; fi
ensure_test_tools
cd "$ROOT"
if [ "$profile" = release ]; then
  cargo build --workspace --release || die "cargo build --release failed"
else
  cargo build --workspace || die "cargo build failed"
fi
export COACHWIRE_BIN_DIR=$CARGO_TARGET_DIR/$profile
exec "$COACHWIRE_BIN_DIR/coachwire-soak" "$@"
