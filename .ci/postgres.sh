#!/usr/bin/env bash
# Sourced by test.sh: starts a throwaway PostgreSQL server for the tests and
# exports DAGWRAP_TEST_PG (its DSN). The server listens on loopback and on a
# Unix socket in a temporary folder; pg_stop (trapped on EXIT by test.sh)
# stops it and removes the folder. DAGWRAP_PG_OPTS adds server settings
# (postgres -c options; bench.sh sizes the server for its 20M-entry case).

pg_bindir() {
  local d
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    dirname "$(command -v initdb)"; return 0
  fi
  for d in /usr/lib/postgresql/*/bin; do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  done
  return 1
}

# as_postgres runs a command as the postgres user when we are root
# (PostgreSQL refuses to run as root).
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + RANDOM % 20000))
}

PG_TMP=""
PG_BIN=""

pg_stop() {
  if [ -n "$PG_TMP" ] && [ -d "$PG_TMP" ]; then
    if [ -f "$PG_TMP/data/postmaster.pid" ]; then
      as_postgres "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$PG_TMP"
  fi
  PG_TMP=""
}

pg_start() {
  if ! PG_BIN=$(pg_bindir); then
    echo "postgres.sh: initdb/pg_ctl not found; installing postgresql" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    PG_BIN=$(pg_bindir) || { echo "postgres.sh: no initdb/pg_ctl after installing postgresql" >&2; return 1; }
  fi
  PG_TMP=$(mktemp -d /tmp/dagwrap-pg.XXXXXX)
  chmod 755 "$PG_TMP"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$PG_TMP"; fi
  as_postgres "$PG_BIN/initdb" -D "$PG_TMP/data" -U postgres -A trust -E UTF8 --no-sync >"$PG_TMP/initdb.log" 2>&1 ||
    { cat "$PG_TMP/initdb.log" >&2; return 1; }
  local port try
  for try in 1 2 3 4 5; do
    port=$(pg_free_port)
    # fsync stays on: the tests check that what was reported done survives.
    if as_postgres "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_TMP -c max_connections=300 -c shared_buffers=128MB ${DAGWRAP_PG_OPTS:-}" \
      start >/dev/null; then
      export DAGWRAP_TEST_PG="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
      export DAGWRAP_TEST_PG_BIN="$PG_BIN" # for tests that restart a server of their own
      echo "postgres.sh: PostgreSQL ($("$PG_BIN/postgres" --version)) on 127.0.0.1:$port, data in $PG_TMP" >&2
      return 0
    fi
    tail -5 "$PG_TMP/server.log" >&2 || true
  done
  echo "postgres.sh: PostgreSQL did not start" >&2
  return 1
}
