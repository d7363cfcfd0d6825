#!/usr/bin/env bash
# Benchmarks coachwire against the seed's naive design on this machine, in one run.
#   scripts/bench.sh [RATE ...]        default rates: 1000 2000 4000 6000 8000 msg/s
#   scripts/bench.sh replies [ARG ...] streamed replies (bench/replies.mjs: 200 replies at
#                                      20 appends/s each beside 500 msg/s of chat; ARGs
#                                      go to it, e.g. --replies 100)
#   scripts/bench.sh memory [N]        ingest's resident memory per joined connection: N
#                                      sockets (5000) in rooms of 4 at 10 msg/s, RSS before
#                                      and with all joined; the floor's beside it
# Env: BENCH_CONNECTIONS (200), BENCH_ROOM_SIZE (4), BENCH_DURATION (8s), BENCH_WARMUP (2s),
#      BENCH_CLIENT (rust: the built-in Socket.IO driver; node: socket.io-client),
#      BENCH_DRIVERS (driver threads or Node processes, 1), BENCH_SKIP_REFERENCE=1,
#      BENCH_SKIP_FLOOR=1 (the floor step: bare socketioxide, bench/src/floor.rs),
#      BENCH_CHECKPOINT=0: no CHECKPOINT before each step (see load()),
#      BENCH_PG_STATEMENTS=1: Postgres's statements by their share of its time per
#      coachwire step (pg_stat_statements, preloaded once with a restart of the local
#      cluster), printed and kept as .run/bench/statements-<rate>.txt,
#      BENCH_HISTORY_ROWS (0): after the steps, insert this many messages of history
#      (bench/history.sql) while the stack runs, and step through the rates again as
#      "coachwire+history": statements prepared on the small table must still plan well.
# Starts the stack (release build, rate limits off), steps through the rates with
# coachwire-load, then does the same against the floor (socketioxide alone, no queue, no
# database) and bench/reference (one Node process, socket.io + pg, insert then ack) on its
# own database. Prints one table of latencies with the ratio, and one of CPU time per
# message of every process (the load driver's too) over each step's measured window.
# Results: .run/bench/<label>-<rate>.json and .run/bench/summary.json.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

MODE=messages REPLY_ARGS=() MEMORY_CONNECTIONS=5000
if [ "${1:-}" = replies ]; then MODE=replies; shift; REPLY_ARGS=("$@"); set --; fi
if [ "${1:-}" = memory ]; then MODE=memory MEMORY_CONNECTIONS=${2:-5000}; set --; fi
RATES=("$@"); [ ${#RATES[@]} -gt 0 ] || RATES=(1000 2000 4000 6000 8000)
OUT=$ROOT/.run/bench
REF_PORT=3100
FLOOR_PORT=3200
REF_DB=coachwire_bench_reference

export_defaults
ensure_postgres
ensure_node_deps
mkdir -p "$OUT"
rm -f "$OUT"/*.json

# The benchmark measures the pipeline, not the abuse limits.
export COACHWIRE_MESSAGE_LIMIT=0 COACHWIRE_CONNECTION_LIMIT=0 COACHWIRE_CONVERSATION_LIMIT=0
# pg_stat_statements in the coachwire database, preloaded (a restart, once) if it is not.
statements_on() {
  if [ "$(echo "SHOW shared_preload_libraries" | as_postgres_psql -At)" != pg_stat_statements ]; then
    local cluster
    cluster=$(local_cluster online) || die "BENCH_PG_STATEMENTS needs the local cluster on 5432"
    log "postgres: preloading pg_stat_statements (restarts cluster $cluster)"
    echo "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'" | as_postgres_psql
    # shellcheck disable=SC2086 # "VERSION NAME" is two arguments on purpose
    as_root pg_ctlcluster $cluster restart
    wait_for 30 pg_isready -q -h 127.0.0.1 -p 5432 || die "postgres did not come back"
  fi
  echo "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" | as_postgres_psql -d coachwire
}
# Each statement's share of the step's execution time, calls and rows per call.
statements() { # RATE
  as_postgres_psql -d coachwire -P pager=off <<'SQL' | tee "$OUT/statements-$1.txt"
SELECT round((100 * total_exec_time / sum(total_exec_time) OVER ())::numeric, 1) AS "share %",
       calls, round(total_exec_time::numeric / calls, 3) AS "ms/call",
       round(rows::numeric / calls, 1) AS "rows/call",
       left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS statement
FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'coachwire')
ORDER BY total_exec_time DESC LIMIT 12;
SQL
}
[ "${BENCH_PG_STATEMENTS:-0}" != 1 ] || statements_on
# Every client of this machine's driver comes from 127.0.0.1: past 256 sockets the
# per-address cap (ingest/src/serve.rs) would refuse them, as it should a single host.
[ "$MODE" != memory ] || export COACHWIRE_TRUST_PROXY=true
scripts/run-stack.sh >/dev/null
export COACHWIRE_JWT_SECRET=${COACHWIRE_JWT_SECRET:-$(cat .run/jwt-secret)}
if [ "$MODE" = replies ]; then
  node bench/replies.mjs --url http://127.0.0.1:3000 --secret "$COACHWIRE_JWT_SECRET" \
    --json "$OUT/replies.json" "${REPLY_ARGS[@]}" || { scripts/run-stack.sh stop >/dev/null; die "bench/replies.mjs failed"; }
  scripts/run-stack.sh stop >/dev/null
  exit 0
fi
LOAD=$CARGO_TARGET_DIR/release/coachwire-load
# The floor (bench/src/bin/floor.rs), a fresh process per step; its pid in floor_pid.
floor_start() {
  COACHWIRE_JWT_SECRET=$COACHWIRE_JWT_SECRET PORT=$FLOOR_PORT \
    "$CARGO_TARGET_DIR/release/coachwire-floor" >>"$OUT/floor.log" 2>&1 &
  floor_pid=$!
  wait_for 30 curl -fsS "http://127.0.0.1:$FLOOR_PORT/healthz" || die "floor server not up; see $OUT/floor.log"
}
floor_stop() { kill "$floor_pid"; wait "$floor_pid" 2>/dev/null || true; }
if [ "$MODE" = memory ]; then
  # Idle-ish sockets: 10 msg/s in all keeps every room live without adding buffers.
  memory_step() { # LABEL URL PID [ARG...]
    local label=$1 url=$2 pid=$3; shift 3
    log "$label: $MEMORY_CONNECTIONS connections, resident memory"
    "$LOAD" --label "$label" --url "$url" --database-url "$DATABASE_URL" --rate 10 \
      --connections "$MEMORY_CONNECTIONS" --room-size 4 --warmup 5s --duration 10s \
      --rss "$label=$pid" --json "$OUT/memory-$label.json" "$@" | grep -E "RSS|exactly once"
  }
  memory_step ingest http://127.0.0.1:3000 "$(cat .run/ingest.pid)"
  scripts/run-stack.sh stop >/dev/null
  floor_start
  memory_step floor "http://127.0.0.1:$FLOOR_PORT" "$floor_pid" --stores-nothing
  floor_stop
  exit 0
fi

# A step that cannot finish (a server too far behind to accept the clients) is reported
# as missing rather than ending the run. Extra arguments go to coachwire-load (the
# processes whose CPU per message it reports: --cpu NAME=PID, --cpu-tree NAME=PID).
#
# Each step starts right after a CHECKPOINT (BENCH_CHECKPOINT=0: not). Postgres's timed
# checkpoint (every 5 minutes) writes out what the earlier steps dirtied, and while it
# does, a commit's WAL fsync can wait 70-100 ms behind it: one such stall inside an 8-s
# window is that step's p99, and which step it hits was chance. After a checkpoint the
# next timed one is 5 minutes away, longer than any step.
load() { # LABEL URL DATABASE_URL RATE [ARG...]
  local label=$1 url=$2 db=$3 rate=$4; shift 4
  [ "${BENCH_CHECKPOINT:-1}" = 0 ] || echo "CHECKPOINT" | as_postgres_psql >/dev/null
  log "$label at $rate msg/s"
  "$LOAD" --label "$label" --url "$url" --database-url "$db" --rate "$rate" \
    --connections "${BENCH_CONNECTIONS:-200}" --room-size "${BENCH_ROOM_SIZE:-4}" \
    --duration "${BENCH_DURATION:-8s}" --warmup "${BENCH_WARMUP:-2s}" \
    --client "${BENCH_CLIENT:-rust}" --drivers "${BENCH_DRIVERS:-1}" \
    --json "$OUT/$label-$rate.json" "$@" || log "WARNING: $label at $rate msg/s did not finish"
}

# Postgres's postmaster: its children are the backends, which do the database's work.
postgres_pid() {
  local dir
  dir=$(echo "SHOW data_directory" | as_postgres_psql -At 2>/dev/null) && head -n1 "$dir/postmaster.pid"
}
PG_PID=$(postgres_pid) || die "cannot find Postgres's postmaster (SHOW data_directory as postgres)"
cpu_of() { # NAME PIDFILE: --cpu NAME=PID for a process run-stack.sh started
  echo "--cpu $1=$(cat "$2")"
}

# shellcheck disable=SC2046 # the flags split on purpose
stack_cpu() {
  echo $(cpu_of ingest .run/ingest.pid) $(cpu_of persister .run/persister.pid) \
    $(cpu_of fanout .run/fanout.pid) $(cpu_of nats-server .run/nats.pid) --cpu-tree postgres="$PG_PID"
}

# shellcheck disable=SC2046
for rate in "${RATES[@]}"; do
  [ "${BENCH_PG_STATEMENTS:-0}" != 1 ] || echo "SELECT pg_stat_statements_reset()" | as_postgres_psql -d coachwire >/dev/null
  load coachwire http://127.0.0.1:3000 "$DATABASE_URL" "$rate" $(stack_cpu)
  [ "${BENCH_PG_STATEMENTS:-0}" != 1 ] || statements "$rate"
done
HISTORY=${BENCH_HISTORY_ROWS:-0}
if [ "$HISTORY" -gt 0 ]; then
  log "inserting $HISTORY messages of history while the stack runs"
  psql "$DATABASE_URL" -XqAt -v ON_ERROR_STOP=1 -v conversations=$(( (HISTORY + 99) / 100 )) \
    -v per=100 -f bench/history.sql >/dev/null
  log "messages stored: $(psql "$DATABASE_URL" -XAtc 'SELECT count(*) FROM messages')"
  # shellcheck disable=SC2046
  for rate in "${RATES[@]}"; do load coachwire+history http://127.0.0.1:3000 "$DATABASE_URL" "$rate" $(stack_cpu); done
fi
scripts/run-stack.sh stop >/dev/null

# The floor: socketioxide alone doing the same socket work (ack, room broadcast), no
# queue and no database (bench/src/floor.rs). What ingest spends above it is the
# pipeline's own cost.
if [ "${BENCH_SKIP_FLOOR:-0}" != 1 ]; then
  for rate in "${RATES[@]}"; do
    floor_start
    load floor "http://127.0.0.1:$FLOOR_PORT" "$DATABASE_URL" "$rate" --stores-nothing --cpu floor=$floor_pid
    floor_stop
  done
fi

if [ "${BENCH_SKIP_REFERENCE:-0}" != 1 ]; then
  [ -d bench/reference/node_modules ] || (cd bench/reference && npm ci --no-audit --no-fund)
  ref_url=${DATABASE_URL%/*}/$REF_DB
  psql "$DATABASE_URL" -XAtqc "DROP DATABASE IF EXISTS $REF_DB" -c "CREATE DATABASE $REF_DB" >/dev/null
  # A fresh process per step, as the stack gets a settled pipeline per step: a backlog
  # left by an overloaded step must not count against the next one.
  for rate in "${RATES[@]}"; do
    DATABASE_URL=$ref_url PORT=$REF_PORT COACHWIRE_JWT_SECRET=$COACHWIRE_JWT_SECRET \
      node bench/reference/server.mjs >>"$OUT/reference.log" 2>&1 &
    ref_pid=$!
    wait_for 30 curl -fsS "http://127.0.0.1:$REF_PORT/healthz" || die "reference server not up; see $OUT/reference.log"
    load reference "http://127.0.0.1:$REF_PORT" "$ref_url" "$rate" --cpu reference=$ref_pid --cpu-tree postgres="$PG_PID"
    kill "$ref_pid"; wait "$ref_pid" 2>/dev/null || true
  done
fi

python3 - "$OUT" "${RATES[@]}" <<'PY'
import json, os, sys
out, rates = sys.argv[1], sys.argv[2:]
def get(label, rate):
    path = os.path.join(out, f"{label}-{rate}.json")
    return json.load(open(path)) if os.path.exists(path) else None
LABELS = ("coachwire", "coachwire+history", "floor", "reference")
rows = []
print(f"{'rate':>6} | {'server':<17} {'acked/s':>8} {'acked%':>7} {'ack p50':>8} {'ack p99':>8} {'room p99':>9} {'deliv p99':>9} check")
for rate in rates:
    for label in LABELS:
        r = get(label, rate)
        if not r:
            continue
        rows.append(r)
        print(f"{rate:>6} | {label:<17} {r['acked_per_sec']:>8.0f} {100*r['acked_ratio']:>6.2f}% "
              f"{r['ack_ms']['p50']:>7.1f}ms {r['ack_ms']['p99']:>7.1f}ms {r['room_ms']['p99']:>8.1f}ms "
              f"{r['delivered_ms']['p99']:>8.1f}ms {r['check'].splitlines()[0][:40]}")
print()
def measured():
    """Every step with CPU figures, in rate order."""
    for rate in rates:
        for label in LABELS:
            r = get(label, rate)
            if r and r.get("cpu"):
                yield rate, label, r["cpu"]
def servers(cpu, field):
    return sum(c.get(field, 0) for c in cpu if c["name"] != "load driver")
print("CPU per message over the measured window, in µs (share of one core):")
for rate, label, cpu in measured():
    costs = "  ".join(f"{c['name']} {c['us_per_message']:.0f} ({100*c['cores']:.0f}%)" for c in cpu)
    print(f"{rate:>6} | {label:<17} server total {servers(cpu, 'us_per_message'):>5.0f}  | {costs}")
print()
print("Runs on a CPU per message, µs per run, and time runnable but waiting for a CPU (share of the window):")
for rate, label, cpu in measured():
    runs = "  ".join(f"{c['name']} {c.get('runs_per_message', 0):.2f} × {c.get('us_per_run', 0):.0f} µs, "
                     f"waited {100*c.get('waited', 0):.0f}%" for c in cpu)
    print(f"{rate:>6} | {label:<17} server runs {servers(cpu, 'runs_per_message'):>5.2f}  | {runs}")
print()
def held(r, ack_p99, room_p99):
    return (r and r["acked_ratio"] >= 0.99 and r["ack_ms"]["p99"] <= ack_p99
            and r["room_ms"]["p99"] <= room_p99 and r["check"] == "passed")
criteria = {
    "target (ack p99 <= 10 ms, send->room p99 <= 50 ms)": (10, 50),
    "keeps up (ack p99 <= 250 ms, send->room p99 <= 500 ms)": (250, 500),
}
best = {}
for name, (ack, room) in criteria.items():
    best[name] = {label: max([int(x) for x in rates if held(get(label, x), ack, room)] or [0])
                  for label in LABELS}
    b = best[name]
    ratio = f", ratio {b['coachwire']/b['reference']:.1f}x" if b["reference"] else ""
    history = (f", with history {b['coachwire+history']} msg/s"
               if get("coachwire+history", rates[0]) else "")
    print(f"highest rate held, {name}, >=99% acked, checker passed: "
          f"coachwire {b['coachwire']} msg/s{history}, reference {b['reference']} msg/s{ratio}")
json.dump({"runs": rows, "held": best}, open(os.path.join(out, "summary.json"), "w"), indent=2)
PY
