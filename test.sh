#!/usr/bin/env bash
# The test command: every package, with the race detector, against a real
# PostgreSQL server started for the run (see .ci/postgres.sh) and stopped on
# exit; then the core package's tests a second time with the piece
# directory in that server (DAGWRAP_TEST_BACKEND=pg; tests about the
# embedded index's files skip there, saying why).
set -euo pipefail
cd "$(dirname "$0")"
source .ci/postgres.sh
trap pg_stop EXIT
pg_start
go test -race -count=1 ./... "$@"
DAGWRAP_TEST_BACKEND=pg go test -race -count=1 . "$@"
