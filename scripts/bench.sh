#!/usr/bin/env bash
# roomd against its limits, in one run, as ratios (docs/PERFORMANCE.md).
#
#   scripts/bench.sh                 # everything, 3 repetitions, medians
#   REPS=1 ROOMS=500 scripts/bench.sh
#
# Needs PostgreSQL (ROOMD_BENCH_POSTGRES_URL, default the local trust-auth
# server) and psql to make a scratch database. Everything runs on this
# machine: the load generator shares its cores with roomd, as the ceilings'
# runs do, so the ratios compare like with like.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
ROOMS=${ROOMS:-1000}          # rooms per webhook run
PARTICIPANTS=${PARTICIPANTS:-4}
CHURN=${CHURN:-4}             # churn bursts per room after the joins
CONC=${CONC:-128}             # rooms in flight
MEM_ROOMS=${MEM_ROOMS:-1000}  # the memory run: MEM_ROOMS x MEM_PEOPLE open
MEM_PEOPLE=${MEM_PEOPLE:-100}
PG_ADMIN=${ROOMD_BENCH_POSTGRES_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
PG_URL=${ROOMD_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/roomd_bench}
PORT_ROOMD=18080
PORT_CEIL=18090
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

cargo build --release --locked --bins >&2
BIN=target/release
LOAD="--rooms $ROOMS --participants $PARTICIPANTS --churn $CHURN --concurrency $CONC"

fresh_pg() {
  psql "$PG_ADMIN" -qtA -c "DROP DATABASE IF EXISTS roomd_bench WITH (FORCE)" -c "CREATE DATABASE roomd_bench" >/dev/null
}

wait_ready() {
  for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$1/$2" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "server on port $1 never got ready" >&2; exit 1
}

start_roomd() { # $1 = database URL
  ROOMD__LOG__LEVEL=warn ROOMD__SERVER__BIND=127.0.0.1:$PORT_ROOMD DATABASE_URL="$1" \
    $BIN/roomd >"$WORK/roomd.log" 2>&1 &
  ROOMD_PID=$!
  wait_ready $PORT_ROOMD readyz
}

stop_roomd() { kill "$ROOMD_PID"; wait "$ROOMD_PID" 2>/dev/null || true; }

# field <file> <regex with one group>
field() { sed -nE "s/$2/\1/p" "$1" | head -1; }

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

declare -A R
record() { R[$1]="${R[$1]:-} $2"; }
med() { echo ${R[$1]} | tr ' ' '\n' | grep . | median; }

webhooks() { # $1 = label, $2 = url, rest = loadgen args
  local label=$1 url=$2; shift 2
  $BIN/roomd-loadgen webhooks --url "$url" $LOAD "$@" >"$WORK/out" 2>&1 || { cat "$WORK/out" >&2; exit 1; }
  record "$label.dps" "$(field "$WORK/out" '.* ([0-9]+) deliveries\/s$')"
  record "$label.eps" "$(field "$WORK/out" '.*: ([0-9]+) events\/s,.*')"
  record "$label.p50" "$(field "$WORK/out" '^latency ms: p50 ([0-9.]+) .*')"
  record "$label.p99" "$(field "$WORK/out" '^latency ms: .* p99 ([0-9.]+) .*')"
  grep -q '^status: 200=[0-9]*$' "$WORK/out" || echo "  ($label: $(grep '^status' "$WORK/out"))" >&2
}

reads() { # $1 = label, $2 = url, $3 = path
  $BIN/roomd-loadgen reads --url "$2" --path "$3" --duration 5 >"$WORK/out" 2>&1 || { cat "$WORK/out" >&2; exit 1; }
  record "$1.rps" "$(field "$WORK/out" '.*: ([0-9]+) requests\/s.*')"
  record "$1.rp99" "$(field "$WORK/out" '^latency ms: .* p99 ([0-9.]+) .*')"
}

for rep in $(seq 1 "$REPS"); do
  echo "repetition $rep/$REPS" >&2
  # The HTTP ceiling: verify + parse only.
  $BIN/roomd-ceiling --bind 127.0.0.1:$PORT_CEIL >/dev/null 2>&1 & CEIL=$!
  sleep 0.3
  webhooks ceiling "http://127.0.0.1:$PORT_CEIL" --no-check
  reads ceiling "http://127.0.0.1:$PORT_CEIL" /v1/rooms/any
  kill $CEIL; wait $CEIL 2>/dev/null || true

  # roomd on SQLite.
  rm -f "$WORK"/bench.db*
  start_roomd "sqlite://$WORK/bench.db?mode=rwc"
  webhooks sqlite "http://127.0.0.1:$PORT_ROOMD" --run "s$rep" --database-url "sqlite://$WORK/bench.db"
  reads sqlite "http://127.0.0.1:$PORT_ROOMD" "/v1/rooms/lg-s$rep-0"
  stop_roomd

  # roomd on PostgreSQL: peak, reads, then half of the peak, paced.
  fresh_pg
  start_roomd "$PG_URL"
  webhooks pg "http://127.0.0.1:$PORT_ROOMD" --run "p$rep" --database-url "$PG_URL"
  reads pg "http://127.0.0.1:$PORT_ROOMD" "/v1/rooms/lg-p$rep-0"
  half=$(echo ${R[pg.dps]} | awk '{print int($NF/2)}')
  webhooks pghalf "http://127.0.0.1:$PORT_ROOMD" --run "h$rep" --rate "$half" --database-url "$PG_URL"
  record pghalf.rate "$half"
  # The same rooms again, now live (their first events arrive as redeliveries).
  webhooks pgwarm "http://127.0.0.1:$PORT_ROOMD" --run "h$rep" --rate "$half" --database-url "$PG_URL"
  stop_roomd

  # One room under LiveKit's serial delivery: each event waits for the
  # previous answer, so the room's rate is 1/latency.
  SERIAL="--rooms 1 --participants ${SERIAL_PEOPLE:-2000} --churn 0 --concurrency 1 --duplicates 0"
  $BIN/roomd-ceiling --bind 127.0.0.1:$PORT_CEIL >/dev/null 2>&1 & CEIL=$!
  sleep 0.3
  LOAD="$SERIAL" webhooks serialceil "http://127.0.0.1:$PORT_CEIL" --no-check
  kill $CEIL; wait $CEIL 2>/dev/null || true
  fresh_pg
  start_roomd "$PG_URL"
  LOAD="$SERIAL" webhooks serialpg "http://127.0.0.1:$PORT_ROOMD" --run "q$rep" --database-url "$PG_URL"
  stop_roomd
  rm -f "$WORK"/serial.db*
  start_roomd "sqlite://$WORK/serial.db?mode=rwc"
  LOAD="$SERIAL" webhooks serialsqlite "http://127.0.0.1:$PORT_ROOMD" --run "q$rep" --database-url "sqlite://$WORK/serial.db"
  stop_roomd

  # The naive design's database ceiling: the same events, one transaction each.
  fresh_pg
  $BIN/roomd-loadgen naive-db --database-url "$PG_URL" $LOAD >"$WORK/out" 2>&1 || { cat "$WORK/out" >&2; exit 1; }
  record naivepg.eps "$(field "$WORK/out" '.* s: ([0-9]+) events\/s.*')"
  rm -f "$WORK"/naive.db*
  $BIN/roomd-loadgen naive-db --database-url "sqlite://$WORK/naive.db?mode=rwc" $LOAD >"$WORK/out" 2>&1 || { cat "$WORK/out" >&2; exit 1; }
  record naivesqlite.eps "$(field "$WORK/out" '.* s: ([0-9]+) events\/s.*')"
done

# Memory: MEM_ROOMS x MEM_PEOPLE open participants on PostgreSQL.
fresh_pg
start_roomd "$PG_URL"
$BIN/roomd-loadgen webhooks --url "http://127.0.0.1:$PORT_ROOMD" --rooms "$MEM_ROOMS" \
  --participants "$MEM_PEOPLE" --churn 0 --duplicates 0 --concurrency 64 --pid "$ROOMD_PID" >"$WORK/mem" 2>&1 \
  || { cat "$WORK/mem" >&2; exit 1; }
mem_line=$(grep '^server RSS' "$WORK/mem")
mem_bytes=$(field "$WORK/mem" '.*\(([0-9]+) bytes per open participant\)')
stop_roomd

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'; }
cat <<TABLE

roomd benchmarks: $(nproc) cores, $REPS repetitions (medians), $ROOMS rooms x $PARTICIPANTS people, churn $CHURN x 4 steps, concurrency $CONC
| measure                                   | value            | ratio / target |
|-------------------------------------------|------------------|----------------|
| HTTP ceiling, webhooks (verify+parse)     | $(med ceiling.dps) deliveries/s |  |
| HTTP ceiling, GET room                    | $(med ceiling.rps) req/s |  |
| naive one-txn-per-event, PostgreSQL       | $(med naivepg.eps) events/s |  |
| naive one-txn-per-event, SQLite           | $(med naivesqlite.eps) events/s |  |
| roomd PostgreSQL, webhooks                | $(med pg.eps) events/s, $(med pg.dps) deliveries/s, p50 $(med pg.p50) p99 $(med pg.p99) ms | $(ratio "$(med pg.eps)" "$(med naivepg.eps)")x naive (>= 4); $(ratio "$(med pg.dps)" "$(med ceiling.dps)") of HTTP (>= 0.20) |
| roomd SQLite, webhooks                    | $(med sqlite.eps) events/s, $(med sqlite.dps) deliveries/s, p50 $(med sqlite.p50) p99 $(med sqlite.p99) ms | $(ratio "$(med sqlite.eps)" "$(med naivesqlite.eps)")x naive; $(ratio "$(med sqlite.dps)" "$(med ceiling.dps)") of HTTP |
| roomd PostgreSQL at half peak ($(med pghalf.rate)/s), new rooms | p50 $(med pghalf.p50) p99 $(med pghalf.p99) ms | p99 < 10 ms |
| roomd PostgreSQL at half peak, rooms already live | p50 $(med pgwarm.p50) p99 $(med pgwarm.p99) ms | p99 < 10 ms |
| one room, serial delivery: HTTP ceiling   | $(med serialceil.eps) events/s, p50 $(med serialceil.p50) ms |  |
| one room, serial delivery: roomd PostgreSQL | $(med serialpg.eps) events/s, p50 $(med serialpg.p50) ms | $(ratio "$(med serialpg.eps)" "$(med serialceil.eps)") of the serial ceiling (>= 0.25) |
| one room, serial delivery: roomd SQLite   | $(med serialsqlite.eps) events/s, p50 $(med serialsqlite.p50) ms | $(ratio "$(med serialsqlite.eps)" "$(med serialceil.eps)") of the serial ceiling |
| roomd GET room (PostgreSQL)               | $(med pg.rps) req/s, p99 $(med pg.rp99) ms | $(ratio "$(med pg.rps)" "$(med ceiling.rps)") of HTTP (>= 0.80) |
| roomd GET room (SQLite)                   | $(med sqlite.rps) req/s | $(ratio "$(med sqlite.rps)" "$(med ceiling.rps)") of HTTP |
| memory, $((MEM_ROOMS * MEM_PEOPLE)) open participants (PostgreSQL) | $mem_bytes bytes each ($mem_line) | < 1024 |
TABLE
