#!/usr/bin/env bash
# The benchmark command: dagwrap-bench with every case, case 13 (the
# PostgreSQL piece directory) on a throwaway server started as the tests
# start theirs (.ci/postgres.sh) and stopped on exit. Flags go to
# dagwrap-bench (see: go run ./cmd/dagwrap-bench -h).
set -euo pipefail
cd "$(dirname "$0")"
source .ci/postgres.sh
trap pg_stop EXIT
pg_start
go run ./cmd/dagwrap-bench -index-dsn "$DAGWRAP_TEST_PG" "$@"
