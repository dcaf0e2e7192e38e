#!/usr/bin/env bash
# The project's test command (`make test`): installs what is missing, starts redis-server
# and versitygw on free loopback ports, runs go vet and the race-enabled test suite against
# them, and stops what it started on every exit path. Exits with the tests' status.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/services.sh
trap services_stop EXIT
trap 'exit 130' INT TERM

services_start

echo "== go vet ./..."
go vet ./...
echo "== go test -race -count=1 ./... ${GOTEST_FLAGS:-}"
go test -race -count=1 -timeout 25m ${GOTEST_FLAGS:-} ./...
