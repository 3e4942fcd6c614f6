#!/usr/bin/env bash
# The test command: every package, with the race detector, against a real
# PostgreSQL server started for the run (see .ci/postgres.sh) and stopped on
# exit.
set -euo pipefail
cd "$(dirname "$0")"
source .ci/postgres.sh
trap pg_stop EXIT
pg_start
go test -race -count=1 ./... "$@"
