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

# A short fuzz run of each target with a checked-in seed corpus (testdata/fuzz/<Name>/);
# -fuzz takes one target of one package at a time. FUZZTIME=0 skips them.
if [ "${FUZZTIME:-10s}" != "0" ]; then
  for target in enqueue:FuzzParsePayload enqueue:FuzzManifest worker:FuzzPrecheck; do
    echo "== go test -run '^\$' -fuzz '^${target#*:}\$' -fuzztime ${FUZZTIME:-10s} ./${target%%:*}"
    go test -run '^$' -fuzz "^${target#*:}\$" -fuzztime "${FUZZTIME:-10s}" "./${target%%:*}"
  done
fi
