#!/usr/bin/env bash
# The benchmark command: dagwrap-bench with every case, case 13 (the
# PostgreSQL piece directory) on a throwaway server started as the tests
# start theirs (.ci/postgres.sh) and stopped on exit. Flags go to
# dagwrap-bench (see: go run ./cmd/dagwrap-bench -h).
set -euo pipefail
cd "$(dirname "$0")"
source .ci/postgres.sh
# Sized as a provider would size a directory server on this machine (24 GiB):
# the buffer pool holds the 20M-entry table and its indexes, and checkpoints
# are spaced so that random index inserts do not rewrite whole pages to the
# WAL after each one. fsync and synchronous commit stay on.
export DAGWRAP_PG_OPTS="${DAGWRAP_PG_OPTS:--c shared_buffers=4GB -c max_wal_size=16GB -c checkpoint_timeout=30min -c wal_compression=on}"
trap pg_stop EXIT
pg_start
go run ./cmd/dagwrap-bench -index-dsn "$DAGWRAP_TEST_PG" "$@"
