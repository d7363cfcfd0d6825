#!/usr/bin/env bash
# THE "run the whole stack" command, for local development and demos.
#   scripts/run-stack.sh          start Postgres, NATS and the three services (release
#                                 build) in demo mode, and the AI coach bot; restarts the
#                                 services if already running; prints the web demo's URL,
#                                 demo tokens, a conversation and commands
#   scripts/run-stack.sh stop     stop the services, and NATS if this script started it
# Logs, pids, NATS data and the JWT secret live in .run/ (git-ignored).
# Overrides: COACHWIRE_LISTEN (default 127.0.0.1:3000), COACHWIRE_JWT_SECRET, DATABASE_URL.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"   # nats/dev.conf's store_dir is relative to the cwd

RUN=$ROOT/.run
NATS_MONITOR=http://127.0.0.1:8222
NATS_MIN_VERSION=2.12.0

# True when the pid in .run/NAME.pid is alive and runs PROGRAM. Reading the
# command line (empty for zombies) guards against a stale file naming a reused pid.
running() {
  local pid
  pid=$(cat "$RUN/$1.pid" 2>/dev/null) || return 1
  grep -qaF -- "$2" "/proc/$pid/cmdline" 2>/dev/null
}

stop_one() { # NAME PROGRAM
  if running "$1" "$2"; then
    local pid; pid=$(cat "$RUN/$1.pid")
    log "stopping $1 (pid $pid)"
    kill -TERM "$pid"
    # The services promise to exit within 10 s of SIGTERM (CONTRACT §1).
    wait_for 12 eval "! running $1 $2" || { log "WARNING: $1 still up 12 s after SIGTERM; SIGKILL"; kill -KILL "$pid"; }
  fi
  rm -f "$RUN/$1.pid"
}

stop_services() {
  stop_one coach coach-bot/bot.mjs
  # ingest first, so nothing new is accepted while the consumers drain.
  local svc
  for svc in ingest fanout persister; do stop_one "$svc" "coachwire-$svc"; done
}

version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

start_nats() {
  if port_open 127.0.0.1 4222 && ! running nats nats-server; then
    log "WARNING: a NATS server this script did not start answers on 127.0.0.1:4222; using it (the services check its version and JetStream themselves)"
    return
  fi
  if ! running nats nats-server; then
    # Installed only now: a NATS server already answering needs nothing installed.
    ensure_nats_binary
    log "nats: starting $COACHWIRE_NATS_SERVER -c nats/dev.conf (data in .run/nats)"
    # setsid: a Ctrl-C in this terminal must not take the background stack down.
    # GOMAXPROCS: this stack puts everything on one host, where Go's scheduler threads
    # mostly woke each other: one thread took 16-18% off nats-server's CPU per message
    # at 1000-6000 msg/s on 2 cores (docs/benchmarks.md). NATS_GOMAXPROCS overrides it.
    GOMAXPROCS=${NATS_GOMAXPROCS:-1} setsid "$COACHWIRE_NATS_SERVER" -c nats/dev.conf </dev/null >>"$RUN/nats.log" 2>&1 &
    echo $! >"$RUN/nats.pid"
    # /healthz turns 200 only once JetStream is up, not merely the client port.
    wait_for 15 curl -fsS "$NATS_MONITOR/healthz" || die "nats: not healthy after 15 s; see .run/nats.log"
  fi
  local version
  version=$(curl -fsS "$NATS_MONITOR/varz" | sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' | head -n1) || true
  version_ge "$version" "$NATS_MIN_VERSION" || die "nats: server is '${version:-unknown}', need >= $NATS_MIN_VERSION"
  log "nats: ok (v$version, ours)"
}

jwt_secret() {
  if [ -z "${COACHWIRE_JWT_SECRET:-}" ]; then
    # Generated once and kept, so tokens printed earlier stay valid across restarts.
    [ -s "$RUN/jwt-secret" ] || (umask 077; od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$RUN/jwt-secret")
    COACHWIRE_JWT_SECRET=$(cat "$RUN/jwt-secret")
  fi
  export COACHWIRE_JWT_SECRET
}

start_service() { # NAME [VAR=value...]
  local name=$1; shift
  env "$@" setsid "$BIN/coachwire-$name" </dev/null >"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
}

wait_ready() {
  local svc tries=240   # 60 s: first start runs migrations and creates streams
  until curl -fsS "$URL/readyz" >/dev/null 2>&1; do
    for svc in persister fanout ingest; do
      if ! running "$svc" "coachwire-$svc"; then
        tail -n 20 "$RUN/$svc.log" >&2
        stop_services   # no half-started stack left behind
        die "$svc exited during start-up; full log in .run/$svc.log"
      fi
    done
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || { stop_services; die "ingest not ready at $URL/readyz after 60 s; see .run/*.log"; }
    sleep 0.25
  done
}

# The demo users' id by name (Alice, Bob, Carol, Coach), from ingest's demo mode.
demo_user() {
  curl -fsS "$URL/demo/api/users" | python3 -c "import json,sys; print(next(u['userId'] for u in json.load(sys.stdin)['users'] if u['name'] == sys.argv[1]))" "$1"
}

# The AI coach bot, as the demo's Coach, with a day-long token.
start_coach() {
  local token
  token=$("$BIN/coachwire-ingest" token --user "$1" --role ai --ttl 24h) || die "coachwire-ingest token failed"
  log "coach: starting clients/js/examples/coach-bot/bot.mjs (log in .run/coach.log)"
  COACHWIRE_URL=$URL COACH_TOKEN=$token setsid node clients/js/examples/coach-bot/bot.mjs </dev/null >>"$RUN/coach.log" 2>&1 &
  echo $! >"$RUN/coach.pid"
}

# The conversation of exactly A, B and the coach: the one an earlier run created, so that
# terminals already open keep theirs and the sidebar holds one; else a new one titled by
# its people.
demo_conversation() { # TOKEN_A A B C
  local found body
  found=$(curl -fsS "$URL/api/conversations?limit=200" -H "Authorization: Bearer $1" | python3 -c '
import json, sys
people = set(sys.argv[1:])
print(next((c["id"] for c in json.load(sys.stdin)["conversations"] if set(c["participantIds"]) == people), ""))
' "$2" "$3" "$4") || die "listing the conversations failed"
  if [ -n "$found" ]; then echo "$found"; return; fi
  body=$(curl -sS --fail-with-body -X POST "$URL/api/conversations" -H "Authorization: Bearer $1" \
    -H 'content-type: application/json' \
    -d "{\"title\":\"$DEMO_TITLE\",\"participantIds\":[\"$2\",\"$3\",\"$4\"]}") ||
    die "creating the demo conversation failed: $body"
  found=$(printf '%s' "$body" | sed -n 's/.*"id"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p')
  [ -n "$found" ] || die "no id in the create-conversation answer: $body"
  echo "$found"
}

# .run/env: everything an operator command or a client needs, sourceable
# (`. .run/env`; scripts/cw sources it itself). .run/demo.env is the same file.
write_env() { # A B C TOKEN_A TOKEN_B TOKEN_C CONVERSATION
  (umask 077
   printf 'export %s=%s\n' URL "$URL" DATABASE_URL "$DATABASE_URL" NATS_URL "$NATS_URL" \
     COACHWIRE_JWT_SECRET "$COACHWIRE_JWT_SECRET" COACHWIRE_BIN_DIR "$BIN" \
     USER_A "$1" USER_B "$2" COACH_USER "$3" TOKEN_A "$4" TOKEN_B "$5" COACH_TOKEN "$6" \
     CONVERSATION_ID "$7" >"$RUN/env")
  ln -sf env "$RUN/demo.env"
}

# Demo mode already runs the coach (a second one would answer nothing twice, but is not
# needed); without it, how to start one.
coach_hint() { # COACH_TOKEN
  if [ "$DEMO" = true ]; then
    printf '# the AI coach is running (log: .run/coach.log); it answers every message in a one-to-one\n'
    printf '# conversation with it, and messages that mention @coach in a group.\n'
  else
    printf '# start the AI coach (rules offline; COACH_LLM_URL for a model):\n'
    printf 'COACHWIRE_URL=%s COACH_TOKEN=%s node clients/js/examples/coach-bot/bot.mjs\n' "$URL" "$1"
  fi
}

make_demo() {
  local a b c token_a token_b token_c id
  if [ "$DEMO" = true ]; then
    a=$(demo_user Alice) && b=$(demo_user Bob) && c=$(demo_user Coach) || die "reading the demo users failed"
    DEMO_TITLE="Alice, Bob and Coach"
  else
    DEMO_TITLE="A, B and the coach"
    # The users of the last run, so that its conversation is reused too.
    a=$(sed -n 's/^export USER_A=//p' "$RUN/env" 2>/dev/null); b=$(sed -n 's/^export USER_B=//p' "$RUN/env" 2>/dev/null)
    c=$(sed -n 's/^export COACH_USER=//p' "$RUN/env" 2>/dev/null)
    [ -n "$a" ] && [ -n "$b" ] && [ -n "$c" ] || {
      a=$(cat /proc/sys/kernel/random/uuid); b=$(cat /proc/sys/kernel/random/uuid)
      c=$(cat /proc/sys/kernel/random/uuid)
    }
  fi
  token_a=$("$BIN/coachwire-ingest" token --user "$a" --ttl 24h) || die "coachwire-ingest token failed"
  token_b=$("$BIN/coachwire-ingest" token --user "$b" --ttl 24h) || die "coachwire-ingest token failed"
  token_c=$("$BIN/coachwire-ingest" token --user "$c" --role ai --ttl 24h) || die "coachwire-ingest token failed"
  id=$(demo_conversation "$token_a" "$a" "$b" "$c")
  write_env "$a" "$b" "$c" "$token_a" "$token_b" "$token_c" "$id"
  cat <<EOF

coachwire is running at $URL   (logs: .run/*.log; stop: scripts/run-stack.sh stop)
$([ "$DEMO" = true ] && printf 'web demo:      %s/demo/   (open it in two windows; A is Alice, B is Bob)\n' "$URL")
user A:        $a
token A:       $token_a
user B:        $b
token B:       $token_b
AI coach:      $c
coach token:   $token_c
conversation:  $id        (A, B and the coach, kept across runs; all of the above: . .run/env)
operators:     scripts/cw persister status   (any coachwire command, with .run/env; docs/operations.md)

# send a message as A, then read the conversation:
curl -sS -X POST $URL/api/conversations/$id/messages -H 'Authorization: Bearer $token_a' -H 'content-type: application/json' -d '{"content":"hello"}'
curl -sS '$URL/api/conversations/$id/messages?afterSeq=0' -H 'Authorization: Bearer $token_a'

# chat: B listens in one terminal, A types lines in another:
node scripts/chat.mjs --url $URL --token $token_b --conversation $id
node scripts/chat.mjs --url $URL --token $token_a --conversation $id

$(coach_hint "$token_c")
EOF
}

start() {
  export_defaults
  ensure_postgres
  # Only for scripts/chat.mjs and the coach bot; the stack itself runs without Node.
  if [ -f tests/js/package.json ]; then ensure_node_deps tests/js; else log "WARNING: no tests/js/package.json, so scripts/chat.mjs can't run"; fi
  # The client library, for the coach bot that the demo prints.
  ensure_node_deps clients/js
  npm --prefix clients/js run --silent build >&2 || die "building clients/js failed"
  # Demo mode (the web page, its token route and the coach bot) unless COACHWIRE_DEMO=false.
  DEMO=${COACHWIRE_DEMO:-true}
  if [ "$DEMO" = true ]; then
    ensure_node_deps clients/web
    npm --prefix clients/web run --silent build >&2 || die "building the web demo failed"
    export COACHWIRE_DEMO=true COACHWIRE_DEMO_DIR=$ROOT/clients/web/public
  fi
  mkdir -p "$RUN"
  start_nats
  stop_services   # a re-run restarts them on the fresh build
  log "+ cargo build --release --workspace"
  cargo build --release --workspace || die "cargo build --release failed"
  BIN=$CARGO_TARGET_DIR/release
  jwt_secret
  local listen=${COACHWIRE_LISTEN:-127.0.0.1:3000}
  local host=${listen%:*} port=${listen##*:}
  [ "$host" != 0.0.0.0 ] || host=127.0.0.1
  URL=http://$host:$port
  # Else /readyz could be answered by whatever holds the port, not by our ingest.
  ! port_open "$host" "$port" || die "something already listens on $listen; stop it or set COACHWIRE_LISTEN"
  export NATS_URL=nats://127.0.0.1:4222
  # Admin ports set explicitly: one inherited COACHWIRE_ADMIN_LISTEN would make them collide.
  start_service persister COACHWIRE_ADMIN_LISTEN=127.0.0.1:9101
  start_service fanout COACHWIRE_ADMIN_LISTEN=127.0.0.1:9102
  start_service ingest COACHWIRE_LISTEN="$listen" COACHWIRE_ADMIN_LISTEN=127.0.0.1:9100
  wait_ready
  make_demo
  if [ "$DEMO" = true ]; then start_coach "$(demo_user Coach)"; fi
}

case "${1:-start}" in
  start) start ;;
  stop) stop_services; stop_one nats nats-server; log "stopped" ;;
  *) die "usage: scripts/run-stack.sh [start|stop]" ;;
esac
