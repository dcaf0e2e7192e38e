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
# The storage package runs verbosely so that the log says which servers its conformance
# suite ran against (the real versitygw among them); its full output is shown on failure.
# Packages run one at a time (-p 1): the fault, budget and worker tests hold timing bounds
# (a 403 stops calls within 100 ms, one probe per cooldown) that a neighbouring package's
# processes (the bench's smoke run starts a dozen) can stretch on a 2-CPU machine.
storage_log=$(mktemp)
status=0
go test -race -count=1 -p 1 -timeout 25m ${GOTEST_FLAGS:-} $(go list ./... | grep -v '/storage$') || status=$?
go test -race -count=1 -timeout 10m -v ${GOTEST_FLAGS:-} ./storage >"$storage_log" 2>&1 || { status=$?; cat "$storage_log"; }
grep -E '^(ok|FAIL)\s' "$storage_log" || true
echo "storage conformance suite: $(grep -c "storagetest: .* against s3://.*endpoint=${LIVENESSQ_TEST_S3_ENDPOINT}" "$storage_log" || true) tests against versitygw at ${LIVENESSQ_TEST_S3_ENDPOINT}, $(grep -c 'storagetest: .* against file://' "$storage_log" || true) against the local driver"
grep -E 'MiB \(.*heap peak' "$storage_log" | sed 's/^ *[a-z_]*\.go:[0-9]*: /  /' || true
rm -f "$storage_log"
[ "$status" -eq 0 ] || exit "$status"

# A short fuzz run of each target with a checked-in seed corpus (testdata/fuzz/<Name>/);
# -fuzz takes one target of one package at a time. The budgets are execution counts
# (~10 s each here), not durations: a duration races Go's fuzz coordinator at its
# deadline on a busy machine and fails with a bare "context deadline exceeded"
# (golang/go#75804, fixed in Go 1.27). FUZZTIME sets one budget for all; 0 skips them.
if [ "${FUZZTIME:-}" != "0" ]; then
  for target in enqueue:FuzzParsePayload:50000x enqueue:FuzzManifest:30000x worker:FuzzPrecheck:40000x; do
    pkg=${target%%:*} rest=${target#*:}
    name=${rest%%:*} budget=${FUZZTIME:-${rest#*:}}
    echo "== go test -run '^\$' -fuzz '^$name\$' -fuzztime $budget ./$pkg"
    go test -run '^$' -fuzz "^$name\$" -fuzztime "$budget" "./$pkg"
  done
fi
