#!/usr/bin/env bash
# The soak (issue 9): many short-lived rooms under new names beside a few
# rooms that never end, for many rounds; roomd's memory after each round,
# then a restart and how long recovery takes.
#
#   scripts/soak.sh                        # SQLite, 30 rounds
#   ROUNDS=60 DATABASE_URL=postgres://... scripts/soak.sh
#   ROOMD=/path/to/other/roomd scripts/soak.sh   # the same soak, another build
#
# The never-ending rooms keep closing sessions; what roomd keeps of them in
# memory, and reads back at recovery, is what the soak shows.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-30}
SHORT=${SHORT:-500}           # new rooms per round, started, churned, finished
LONG=${LONG:-20}              # rooms that never end
PEOPLE=${PEOPLE:-20}          # people in each room at once
LONG_CHURN=${LONG_CHURN:-10}  # churn bursts per never-ending room per round
STEPS=${STEPS:-10}
PORT=${PORT:-18180}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
DB=${DATABASE_URL:-sqlite://$WORK/soak.db?mode=rwc}
# HORIZON=300 shows forgetting within a run of minutes (the default is 3600).
[ -z "${HORIZON:-}" ] || export ROOMD__ROOMS__HISTORY_HORIZON_SECS=$HORIZON

[ -n "${ROOMD:-}" ] || cargo build --release --locked --bins >&2
ROOMD=${ROOMD:-target/release/roomd}
LOADGEN=${LOADGEN:-target/release/roomd-loadgen}

start() {
  ROOMD__LOG__LEVEL=warn ROOMD__SERVER__BIND=127.0.0.1:$PORT DATABASE_URL="$DB" \
    ROOMD__ROOMS__IDLE_TIMEOUT_SECS=5 ROOMD__ROOMS__RETIRE_AFTER_FINISH_SECS=2 \
    "$ROOMD" --config /nonexistent >>"$WORK/roomd.log" 2>&1 &
  PID=$!
  local t0=$(date +%s%N)
  for _ in $(seq 1 6000); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.01
  done
  READY=$(( ($(date +%s%N) - t0) / 1000000 ))
}

start
echo "roomd $ROOMD on $DB: ready in ${READY} ms"
"$LOADGEN" soak --url "http://127.0.0.1:$PORT" --rounds "$ROUNDS" --short-rooms "$SHORT" \
  --long-rooms "$LONG" --participants "$PEOPLE" --long-churn "$LONG_CHURN" --steps "$STEPS" \
  --pid "$PID"
RSS_END=$(awk '/VmRSS/ {print $2/1024}' /proc/$PID/status)
kill "$PID"; wait "$PID" 2>/dev/null || true
start
RSS_RECOVERED=$(awk '/VmRSS/ {print $2/1024}' /proc/$PID/status)
echo "after the soak: RSS ${RSS_END} MiB; restarted: ready in ${READY} ms, RSS ${RSS_RECOVERED} MiB"
