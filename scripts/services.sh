#!/usr/bin/env bash
# Installs (when missing) and starts the real services the tests need: redis-server and
# versitygw (an S3-compatible server, posix backend), each on a free 127.0.0.1 port with a
# temporary directory of its own. Sourced by scripts/test.sh and by `livenessq bench`'s
# harness; it exports LIVENESSQ_TEST_* variables and records the PIDs it started in
# SERVICE_PIDS so that the caller can stop them (services_stop).
#
# Cache for the versitygw binary: $LIVENESSQ_CACHE (default ~/.cache/livenessq), outside
# the repository, so it is built once per machine.

VERSITYGW_VERSION=v1.8.0
LIVENESSQ_CACHE=${LIVENESSQ_CACHE:-$HOME/.cache/livenessq}
SERVICE_PIDS=()
SERVICE_TMP=""

log() { printf 'services: %s\n' "$*" >&2; }

free_port() {
  python3 - 2>/dev/null <<'PY' || go_free_port
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}
go_free_port() {
  # Fallback without python: pick a random high port that nothing listens on.
  local p
  while :; do
    p=$(( (RANDOM << 1 | RANDOM & 1) % 20000 + 30000 ))
    (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return; }
  done
}

ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    log "installing redis-server with apt"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server redis-tools >/dev/null
  fi
}

ensure_versitygw() {
  VERSITYGW_BIN="$LIVENESSQ_CACHE/versitygw-$VERSITYGW_VERSION/versitygw"
  if [ ! -x "$VERSITYGW_BIN" ]; then
    log "building versitygw $VERSITYGW_VERSION into $LIVENESSQ_CACHE (first time only, ~2 min)"
    mkdir -p "$(dirname "$VERSITYGW_BIN")"
    GOBIN="$(dirname "$VERSITYGW_BIN")" GOFLAGS=-mod=mod \
      go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  fi
}

wait_port() { # name port pid
  local i
  for i in $(seq 1 200); do
    if ! kill -0 "$3" 2>/dev/null; then log "$1 exited before answering"; return 1; fi
    (exec 3<>/dev/tcp/127.0.0.1/"$2") 2>/dev/null && return 0
    sleep 0.1
  done
  log "$1 did not answer on 127.0.0.1:$2"; return 1
}

services_start() {
  ensure_redis
  ensure_versitygw
  SERVICE_TMP=$(mktemp -d "${TMPDIR:-/tmp}/livenessq-services.XXXXXX")

  local rport; rport=$(free_port)
  mkdir -p "$SERVICE_TMP/redis"
  redis-server --bind 127.0.0.1 --port "$rport" --dir "$SERVICE_TMP/redis" \
    --save '' --appendonly no --databases 32 --daemonize no \
    --logfile "$SERVICE_TMP/redis.log" &
  SERVICE_PIDS+=($!)
  wait_port redis-server "$rport" "$!" || return 1
  local i
  for i in $(seq 1 50); do redis-cli -p "$rport" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done

  local sport; sport=$(free_port)
  local access="livenessq-test" secret
  secret="test-secret-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  mkdir -p "$SERVICE_TMP/s3"
  # --keep-alive: without it versitygw answers every request with "Connection: close" and
  # each S3 call pays a new TCP connection, which real S3 does not make clients do (the
  # goroutine-leak checks then also see that every client closes its idle connections).
  # --quiet: no access-log line per request (nor the startup banner); a failure to start
  # still reaches versitygw.log.
  ROOT_ACCESS_KEY="$access" ROOT_SECRET_KEY="$secret" \
    "$VERSITYGW_BIN" --port "127.0.0.1:$sport" --access "$access" --secret "$secret" \
    --keep-alive --quiet posix "$SERVICE_TMP/s3" >"$SERVICE_TMP/versitygw.log" 2>&1 &
  SERVICE_PIDS+=($!)
  wait_port versitygw "$sport" "$!" || { cat "$SERVICE_TMP/versitygw.log" >&2; return 1; }

  export LIVENESSQ_TEST_REDIS_ADDR="127.0.0.1:$rport"
  export LIVENESSQ_TEST_REDIS_SERVER="$(command -v redis-server)"
  export LIVENESSQ_TEST_S3_ENDPOINT="http://127.0.0.1:$sport"
  export LIVENESSQ_TEST_S3_ACCESS_KEY="$access"
  export LIVENESSQ_TEST_S3_SECRET_KEY="$secret"
  export LIVENESSQ_TEST_S3_REGION="us-east-1"
  export LIVENESSQ_TEST_VERSITYGW="$VERSITYGW_BIN"
  export LIVENESSQ_TEST_REQUIRE_SERVICES=1
  log "redis-server on $LIVENESSQ_TEST_REDIS_ADDR, versitygw on $LIVENESSQ_TEST_S3_ENDPOINT (pids ${SERVICE_PIDS[*]})"
}

services_stop() {
  local pid
  for pid in "${SERVICE_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${SERVICE_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  SERVICE_PIDS=()
  [ -n "$SERVICE_TMP" ] && rm -rf "$SERVICE_TMP"
  SERVICE_TMP=""
}

# Run directly (`bash scripts/services.sh ENVFILE`), it starts the services, writes their
# variables to ENVFILE for other shells to source, and keeps them up until interrupted.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  trap services_stop EXIT
  trap 'exit 0' INT TERM
  services_start
  env | grep '^LIVENESSQ_TEST_' | sed 's/^/export /' > "${1:-/tmp/livenessq-dev.env}"
  log "variables written to ${1:-/tmp/livenessq-dev.env}"
  while :; do sleep 3600 & wait $!; done
fi
