#!/usr/bin/env bash
# A flame graph of every process of the stack under steady load (docs/benchmarks.md):
#   scripts/profile.sh [RATE] [SECONDS]     default 3000 msg/s, 5 s of samples
# Starts the stack (release, abuse limits off), drives RATE msg/s with coachwire-load (200
# connections in rooms of 4), and after 4 s of warm-up samples ingest, persister, fanout,
# nats-server and Postgres's backends at once with `perf record` (cpu-clock, 199 Hz,
# DWARF call graphs: release builds keep no frame pointers). Writes
# docs/images/flame-<process>.svg (inferno) and the top frames of each to
# .run/profile/<process>.txt. Needs perf (Debian's linux-perf) and inferno, both installed
# here when missing.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

RATE=${1:-3000} SECONDS_SAMPLED=${2:-5}
OUT=$ROOT/.run/profile
IMAGES=$ROOT/docs/images
export_defaults
ensure_postgres
command -v perf >/dev/null || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null ||
  die "perf missing and apt-get install linux-perf failed"
command -v inferno-flamegraph >/dev/null || cargo install inferno --locked || die "cargo install inferno failed"
mkdir -p "$OUT" "$IMAGES"
rm -f "$OUT"/*.data "$OUT"/*.txt

export COACHWIRE_MESSAGE_LIMIT=0 COACHWIRE_CONNECTION_LIMIT=0 COACHWIRE_CONVERSATION_LIMIT=0
scripts/run-stack.sh >/dev/null
export COACHWIRE_JWT_SECRET=${COACHWIRE_JWT_SECRET:-$(cat .run/jwt-secret)}
trap 'scripts/run-stack.sh stop >/dev/null' EXIT

"$CARGO_TARGET_DIR/release/coachwire-load" --label profile --url http://127.0.0.1:3000 \
  --database-url "$DATABASE_URL" --rate "$RATE" --warmup 2s --duration "$((SECONDS_SAMPLED + 6))s" \
  >"$OUT/load.txt" 2>&1 &
load_pid=$!
sleep 4
backends=$(pgrep -d, -P "$(head -n1 "$(echo "SHOW data_directory" | as_postgres_psql -At)/postmaster.pid")")
record() { # NAME PIDS
  perf record -e cpu-clock -F 199 --call-graph dwarf,16384 -p "$2" -o "$OUT/$1.data" \
    -- sleep "$SECONDS_SAMPLED" >/dev/null 2>&1 || log "WARNING: perf record of $1 failed"
}
recorders=()
for svc in ingest persister fanout; do record "$svc" "$(cat ".run/$svc.pid")" & recorders+=($!); done
record nats-server "$(cat .run/nats.pid)" & recorders+=($!)
record postgres "$backends" & recorders+=($!)
wait "${recorders[@]}"
wait "$load_pid" || log "WARNING: the load did not finish; see $OUT/load.txt"

for name in ingest persister fanout nats-server postgres; do
  [ -s "$OUT/$name.data" ] || continue
  perf script -i "$OUT/$name.data" 2>/dev/null | inferno-collapse-perf >"$OUT/$name.folded"
  inferno-flamegraph --title "$name at $RATE msg/s ($SECONDS_SAMPLED s, cpu-clock)" \
    <"$OUT/$name.folded" >"$IMAGES/flame-$name.svg"
  perf report -i "$OUT/$name.data" --no-children --sort symbol --stdio 2>/dev/null |
    grep -E '^ +[0-9.]+%' | sed -n '1,25p' >"$OUT/$name.txt"
  log "$name: docs/images/flame-$name.svg, top frames in .run/profile/$name.txt"
done
