#!/usr/bin/env bash
# A throw-away PostgreSQL server for the tests, from Debian's packages, on 127.0.0.1.
#   scripts/postgres.sh start   installs PostgreSQL if missing, starts a private cluster, prints its URL
#   scripts/postgres.sh stop    stops that cluster
# The cluster lives in var/postgres (port OKR_PG_PORT, default 55432) and trusts local connections:
# it is for tests, never for data you keep.
set -euo pipefail
cd "$(dirname "$0")/.."
port="${OKR_PG_PORT:-55432}"
data="${OKR_PG_DATA:-$PWD/var/postgres}"
log="$data.log"

pg_bin() {
  local initdb
  initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$initdb" ] && dirname "$initdb"
}

as_owner() {
  # initdb and postgres refuse to run as root; run them as the postgres system user then.
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install_postgres() {
  if [ -n "$(pg_bin)" ]; then return; fi
  if [ "$(id -u)" != 0 ]; then
    echo "PostgreSQL is not installed and this is not root: run 'sudo apt-get install postgresql'" >&2
    exit 1
  fi
  echo "installing PostgreSQL from Debian's packages..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
}

start() {
  install_postgres
  local bin; bin=$(pg_bin)
  mkdir -p "$(dirname "$data")"
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$(dirname "$data")"; then
    # The postgres user cannot reach the work tree (a private home, say): keep the cluster in /tmp.
    data="/tmp/okr-ledger-postgres-$port"; log="$data.log"
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$data"
    chmod 700 "$data"
    as_owner "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  if ! as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    touch "$log"; [ "$(id -u)" = 0 ] && chown postgres:postgres "$log"
    as_owner "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 \
      -o "-p $port -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start >/dev/null
  fi
  echo "postgresql://postgres@127.0.0.1:$port/postgres"
}

stop() {
  local bin; bin=$(pg_bin)
  [ -n "$bin" ] && [ -f "$data/PG_VERSION" ] || return 0
  as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
