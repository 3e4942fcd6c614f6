#!/usr/bin/env bash
# The test command: every package, with the race detector.
set -euo pipefail
cd "$(dirname "$0")"
go test -race -count=1 ./... "$@"
