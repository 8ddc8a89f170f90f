#!/usr/bin/env bash
# roomd against its limits, in one run, as ratios (docs/PERFORMANCE.md).
#
#   scripts/bench.sh                 # everything, 3 repetitions, medians (~15 min)
#   scripts/bench.sh --quick         # the same rows with fewer events (~2 min)
#   REPS=1 ROOMS=500 scripts/bench.sh
#   BENCH_BIN=/tmp/old scripts/bench.sh  # another build's roomd, roomd-loadgen, roomd-ceiling
#
# Needs PostgreSQL (ROOMD_BENCH_POSTGRES_URL, default the local trust-auth
# server) and psql to make a scratch database. Everything runs on this
# machine: the load generator shares its cores with roomd, as the ceilings'
# runs do, so the ratios compare like with like. Any step that fails stops
# the run and says which step and why.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--quick" ]]; then
  : "${REPS:=1}" "${ROOMS:=300}" "${CHURN:=2}" "${SERIAL_PEOPLE:=500}" "${MEM_ROOMS:=200}"
  : "${IDLE_ROOMS:=5000}" "${SEED_ROOMS:=2000}"
elif [[ -n "${1:-}" ]]; then
  echo "usage: scripts/bench.sh [--quick]" >&2; exit 2
fi
REPS=${REPS:-3}
ROOMS=${ROOMS:-1000}          # rooms per webhook run
PARTICIPANTS=${PARTICIPANTS:-4}
CHURN=${CHURN:-4}             # churn bursts per room after the joins
CONC=${CONC:-128}             # rooms in flight
SERIAL_PEOPLE=${SERIAL_PEOPLE:-2000} # the serial run: one room, this many joins
MEM_ROOMS=${MEM_ROOMS:-1000}  # the memory run: MEM_ROOMS x MEM_PEOPLE open
MEM_PEOPLE=${MEM_PEOPLE:-100}
IDLE_ROOMS=${IDLE_ROOMS:-20000} # live rooms with nobody in, for memory per room
SEED_ROOMS=${SEED_ROOMS:-10000} # the start run: SEED_ROOMS x SEED_PEOPLE to rebuild
SEED_PEOPLE=${SEED_PEOPLE:-10}
PG_ADMIN=${ROOMD_BENCH_POSTGRES_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
# The database is on this machine: TLS to it protects nothing and cost
# roomd ~12 us of CPU per event at peak (docs/PERFORMANCE.md), so it is off
# here, for roomd and the naive loop alike. Set the URL to measure with it.
PG_URL=${ROOMD_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/roomd_bench?sslmode=disable}
PORT_ROOMD=18080
PORT_CEIL=18090
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
STEP="build"
fail() { # the step, its reason and the tail of what it printed
  echo "bench: step '$STEP' failed: $1" >&2
  [[ -s "$WORK/out" ]] && tail -n 20 "$WORK/out" >&2
  [[ -s "$WORK/roomd.log" ]] && { echo "--- roomd log (tail)" >&2; tail -n 20 "$WORK/roomd.log" >&2; }
  exit 1
}
trap 'fail "command exited $? (line $LINENO)"' ERR

# BENCH_BIN runs binaries built elsewhere (an older commit's, to compare
# two builds in one session) instead of building this checkout.
if [[ -n "${BENCH_BIN:-}" ]]; then
  BIN=$BENCH_BIN
else
  cargo build --release --locked --bins >&2
  BIN=target/release
fi
LOAD="--rooms $ROOMS --participants $PARTICIPANTS --churn $CHURN --concurrency $CONC"

fresh_pg() {
  psql "$PG_ADMIN" -qtA -c "DROP DATABASE IF EXISTS roomd_bench WITH (FORCE)" -c "CREATE DATABASE roomd_bench" >/dev/null
}

start_roomd() { # $1 = database URL; sets ROOMD_PID and STARTED_MS
  local since; since=$(date +%s%N)
  ROOMD__LOG__LEVEL=warn ROOMD__SERVER__BIND=127.0.0.1:$PORT_ROOMD DATABASE_URL="$1" \
    $BIN/roomd >"$WORK/roomd.log" 2>&1 &
  ROOMD_PID=$!
  $BIN/roomd-loadgen ready --url "http://127.0.0.1:$PORT_ROOMD" --since-ns "$since" --timeout 300 >"$WORK/out" 2>&1 \
    || fail "roomd never got ready on $1"
  STARTED_MS=$(field "$WORK/out" '^ready in ([0-9]+) ms$')
}

stop_roomd() {
  kill -0 "$ROOMD_PID" 2>/dev/null || fail "roomd (pid $ROOMD_PID) died during the step"
  kill "$ROOMD_PID"; wait "$ROOMD_PID" 2>/dev/null || true
}

start_ceiling() {
  $BIN/roomd-ceiling --bind 127.0.0.1:$PORT_CEIL >/dev/null 2>&1 & CEIL=$!
  for _ in $(seq 1 200); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT_CEIL/" && return 0
    sleep 0.02
  done
  STEP="ceiling"; fail "the ceiling server never listened"
}
stop_ceiling() { kill "$CEIL"; wait "$CEIL" 2>/dev/null || true; }

# field <file> <regex with one group>
field() { sed -nE "s/$2/\1/p" "$1" | head -1; }

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

declare -A R
record() { R[$1]="${R[$1]:-} $2"; }
med() { echo ${R[$1]} | tr ' ' '\n' | grep . | median; }

HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # a process's user + system CPU

webhooks() { # $1 = label, $2 = url, rest = loadgen args; CPU_OF=pid also records that process's CPU
  local label=$1 url=$2 t0=""; shift 2
  STEP="webhooks $label"
  [[ -n "${CPU_OF:-}" ]] && t0=$(ticks "$CPU_OF")
  $BIN/roomd-loadgen webhooks --url "$url" $LOAD "$@" >"$WORK/out" 2>&1 || fail "the load generator failed"
  if [[ -n "$t0" ]]; then
    local used=$(( $(ticks "$CPU_OF") - t0 ))
    local events deliveries
    events=$(field "$WORK/out" '^([0-9]+) events, .*')
    deliveries=$(field "$WORK/out" '^[0-9]+ events, ([0-9]+) deliveries answered.*')
    record "$label.cpuev" "$(awk -v t="$used" -v hz="$HZ" -v n="$events" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')"
    record "$label.cpudl" "$(awk -v t="$used" -v hz="$HZ" -v n="$deliveries" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')"
  fi
  record "$label.dps" "$(field "$WORK/out" '.* ([0-9]+) deliveries\/s$')"
  record "$label.eps" "$(field "$WORK/out" '.*: ([0-9]+) events\/s,.*')"
  record "$label.p50" "$(field "$WORK/out" '^latency ms: p50 ([0-9.]+) .*')"
  record "$label.p99" "$(field "$WORK/out" '^latency ms: .* p99 ([0-9.]+) .*')"
  # A run over new rooms also prints their first deliveries apart: each
  # starts its room's actor and waits for its load.
  if grep -q "^a room's first delivery" "$WORK/out"; then
    record "$label.coldp50" "$(field "$WORK/out" "^a room's first delivery, ms: p50 ([0-9.]+) .*")"
    record "$label.coldp99" "$(field "$WORK/out" "^a room's first delivery, ms: .* p99 ([0-9.]+) .*")"
  fi
  grep -q '^status: 200=[0-9]*$' "$WORK/out" || echo "  ($label: $(grep '^status' "$WORK/out"))" >&2
}

reads() { # $1 = label, $2 = url, $3 = path
  STEP="reads $1"
  $BIN/roomd-loadgen reads --url "$2" --path "$3" --duration "${READ_SECS:-5}" >"$WORK/out" 2>&1 || fail "the load generator failed"
  record "$1.rps" "$(field "$WORK/out" '.*: ([0-9]+) requests\/s.*')"
  record "$1.rp99" "$(field "$WORK/out" '^latency ms: .* p99 ([0-9.]+) .*')"
}

seeded() { # $1 = label, $2 = database URL: rebuild SEED_ROOMS x SEED_PEOPLE at start
  STEP="start $1"
  $BIN/roomd-loadgen seed --database-url "$2" --rooms "$SEED_ROOMS" --participants "$SEED_PEOPLE" >"$WORK/out" 2>&1 \
    || fail "seeding the database failed"
  start_roomd "$2"
  record "$1.ready" "$STARTED_MS"
  stop_roomd
}

SERIAL="--rooms 1 --participants $SERIAL_PEOPLE --churn 0 --concurrency 1 --duplicates 0"
serial() { # $1 = label suffix, $2 = run name prefix, rest = more loadgen flags; the ceiling, then roomd on PostgreSQL
  local suffix=$1 run=$2; shift 2
  start_ceiling
  LOAD="$SERIAL $*" webhooks "serialceil$suffix" "http://127.0.0.1:$PORT_CEIL" --no-check
  stop_ceiling
  fresh_pg
  start_roomd "$PG_URL"
  LOAD="$SERIAL $*" webhooks "serialpg$suffix" "http://127.0.0.1:$PORT_ROOMD" --run "$run$rep" --database-url "$PG_URL"
  stop_roomd
}

for rep in $(seq 1 "$REPS"); do
  echo "repetition $rep/$REPS" >&2
  # The HTTP ceiling: verify + parse only.
  start_ceiling
  CPU_OF=$CEIL webhooks ceiling "http://127.0.0.1:$PORT_CEIL" --no-check
  reads ceiling "http://127.0.0.1:$PORT_CEIL" /v1/rooms/any
  stop_ceiling

  # roomd on SQLite.
  rm -f "$WORK"/bench.db*
  start_roomd "sqlite://$WORK/bench.db?mode=rwc"
  webhooks sqlite "http://127.0.0.1:$PORT_ROOMD" --run "s$rep" --database-url "sqlite://$WORK/bench.db"
  reads sqlite "http://127.0.0.1:$PORT_ROOMD" "/v1/rooms/lg-s$rep-0"
  stop_roomd

  # roomd on PostgreSQL: peak, reads, then half of the peak, paced.
  fresh_pg
  start_roomd "$PG_URL"
  CPU_OF=$ROOMD_PID webhooks pg "http://127.0.0.1:$PORT_ROOMD" --run "p$rep" --database-url "$PG_URL"
  reads pg "http://127.0.0.1:$PORT_ROOMD" "/v1/rooms/lg-p$rep-0"
  half=$(echo ${R[pg.dps]} | awk '{print int($NF/2)}')
  webhooks pghalf "http://127.0.0.1:$PORT_ROOMD" --run "h$rep" --rate "$half" --database-url "$PG_URL"
  record pghalf.rate "$half"
  # The same rooms again, now live, and the same events: every delivery is
  # a redelivery (a storm of LiveKit's retries after an outage).
  webhooks pgwarm "http://127.0.0.1:$PORT_ROOMD" --run "h$rep" --rate "$half" --database-url "$PG_URL"
  stop_roomd

  # One room under LiveKit's serial delivery: each event waits for the
  # previous answer, so the room's rate is 1/latency.
  serial "" q
  # The same, connecting for every delivery as LiveKit's notifier does (it
  # closes each answer unread, so Go's client does not reuse the connection).
  serial nc c --new-connections
  rm -f "$WORK"/serial.db*
  start_roomd "sqlite://$WORK/serial.db?mode=rwc"
  LOAD="$SERIAL" webhooks serialsqlite "http://127.0.0.1:$PORT_ROOMD" --run "q$rep" --database-url "sqlite://$WORK/serial.db"
  stop_roomd

  # The naive design's database ceiling: the same events, one transaction each.
  STEP="naive PostgreSQL"
  fresh_pg
  $BIN/roomd-loadgen naive-db --database-url "$PG_URL" $LOAD >"$WORK/out" 2>&1 || fail "the naive loop failed"
  record naivepg.eps "$(field "$WORK/out" '.* s: ([0-9]+) events\/s.*')"
  STEP="naive SQLite"
  rm -f "$WORK"/naive.db*
  $BIN/roomd-loadgen naive-db --database-url "sqlite://$WORK/naive.db?mode=rwc" $LOAD >"$WORK/out" 2>&1 || fail "the naive loop failed"
  record naivesqlite.eps "$(field "$WORK/out" '.* s: ([0-9]+) events\/s.*')"

  # Start to ready: a process restart rebuilding SEED_ROOMS live rooms.
  fresh_pg
  seeded startpg "$PG_URL"
  rm -f "$WORK"/seed.db*
  seeded startsqlite "sqlite://$WORK/seed.db?mode=rwc"
done

# Memory: MEM_ROOMS x MEM_PEOPLE open participants on PostgreSQL, then
# IDLE_ROOMS live rooms with nobody in.
mem_run() { # $1 = step, $2 rooms x $3 people open on PostgreSQL; the load generator's report in $WORK/out
  STEP=$1
  fresh_pg
  start_roomd "$PG_URL"
  $BIN/roomd-loadgen webhooks --url "http://127.0.0.1:$PORT_ROOMD" --rooms "$2" \
    --participants "$3" --churn 0 --duplicates 0 --concurrency 64 --pid "$ROOMD_PID" >"$WORK/out" 2>&1 \
    || fail "the load generator failed"
  stop_roomd
}
mem_run "memory per participant" "$MEM_ROOMS" "$MEM_PEOPLE"
mem_line=$(grep '^server RSS' "$WORK/out")
mem_bytes=$(field "$WORK/out" '.*\(([0-9]+) bytes per open participant.*')
# The same with reconciliation on: each actor then keeps who changed in the
# last minute (16 bytes a change), which a burst of joins still holds. The
# URL goes nowhere; the log does not depend on LiveKit answering.
export ROOMD__LIVEKIT__URL=http://127.0.0.1:9
mem_run "memory per participant, reconciliation on" "$MEM_ROOMS" "$MEM_PEOPLE"
unset ROOMD__LIVEKIT__URL
mem_rec_bytes=$(field "$WORK/out" '.*\(([0-9]+) bytes per open participant.*')
mem_run "memory per idle room" "$IDLE_ROOMS" 0
idle_line=$(grep '^server RSS' "$WORK/out")
idle_bytes=$(field "$WORK/out" '.*[( ]([0-9]+) bytes per room\)')
trap - ERR

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'; }
cat <<TABLE

roomd benchmarks: $(nproc) cores, $REPS repetitions (medians), $ROOMS rooms x $PARTICIPANTS people, churn $CHURN x 4 steps, concurrency $CONC
| measure                                   | value            | ratio / target |
|-------------------------------------------|------------------|----------------|
| HTTP ceiling, webhooks (verify+parse)     | $(med ceiling.dps) deliveries/s |  |
| HTTP ceiling, GET room                    | $(med ceiling.rps) req/s |  |
| naive one-txn-per-event, PostgreSQL       | $(med naivepg.eps) events/s |  |
| naive one-txn-per-event, SQLite           | $(med naivesqlite.eps) events/s |  |
| roomd PostgreSQL, webhooks                | $(med pg.eps) events/s, $(med pg.dps) deliveries/s, p50 $(med pg.p50) p99 $(med pg.p99) ms | $(ratio "$(med pg.eps)" "$(med naivepg.eps)")x naive (>= 4); $(ratio "$(med pg.dps)" "$(med ceiling.dps)") of HTTP (>= 0.35) |
| roomd's CPU per event (PostgreSQL, peak) vs the ceiling's per delivery | $(med pg.cpuev) us vs $(med ceiling.cpudl) us | $(ratio "$(med pg.cpuev)" "$(med ceiling.cpudl)")x (<= 1.5) |
| roomd SQLite, webhooks                    | $(med sqlite.eps) events/s, $(med sqlite.dps) deliveries/s, p50 $(med sqlite.p50) p99 $(med sqlite.p99) ms | $(ratio "$(med sqlite.eps)" "$(med naivesqlite.eps)")x naive; $(ratio "$(med sqlite.dps)" "$(med ceiling.dps)") of HTTP |
| roomd PostgreSQL at half peak ($(med pghalf.rate)/s), new rooms | p50 $(med pghalf.p50) p99 $(med pghalf.p99) ms | p99 < 10 ms |
| ... of which each room's first delivery (its actor starts and loads) | p50 $(med pghalf.coldp50) p99 $(med pghalf.coldp99) ms |  |
| roomd PostgreSQL at half peak, rooms already live, every event a redelivery | p50 $(med pgwarm.p50) p99 $(med pgwarm.p99) ms | p99 < 5 ms |
| one room, serial delivery: HTTP ceiling   | $(med serialceil.eps) events/s, p50 $(med serialceil.p50) ms |  |
| one room, serial delivery: roomd PostgreSQL | $(med serialpg.eps) events/s, p50 $(med serialpg.p50) ms | $(ratio "$(med serialpg.eps)" "$(med serialceil.eps)") of the serial ceiling (>= 0.25) |
| one room, serial, a new connection per delivery (as LiveKit connects): HTTP ceiling | $(med serialceilnc.eps) events/s, p50 $(med serialceilnc.p50) ms |  |
| one room, serial, a new connection per delivery: roomd PostgreSQL | $(med serialpgnc.eps) events/s, p50 $(med serialpgnc.p50) ms | $(ratio "$(med serialpgnc.eps)" "$(med serialceilnc.eps)") of that ceiling |
| one room, serial delivery: roomd SQLite   | $(med serialsqlite.eps) events/s, p50 $(med serialsqlite.p50) ms | $(ratio "$(med serialsqlite.eps)" "$(med serialceil.eps)") of the serial ceiling |
| roomd GET room (PostgreSQL)               | $(med pg.rps) req/s, p99 $(med pg.rp99) ms | $(ratio "$(med pg.rps)" "$(med ceiling.rps)") of HTTP (>= 0.80) |
| roomd GET room (SQLite)                   | $(med sqlite.rps) req/s | $(ratio "$(med sqlite.rps)" "$(med ceiling.rps)") of HTTP |
| memory, $((MEM_ROOMS * MEM_PEOPLE)) open participants (PostgreSQL) | $mem_bytes bytes each ($mem_line) | <= 300 |
| ... the same with reconciliation on (\`livekit.url\` set), right after the joins | $mem_rec_bytes bytes each |  |
| memory, $IDLE_ROOMS live rooms with nobody in | $idle_bytes bytes each ($idle_line) | <= 2048 |
| start to ready, $SEED_ROOMS rooms x $SEED_PEOPLE people, PostgreSQL | $(med startpg.ready) ms | <= 1000 |
| start to ready, $SEED_ROOMS rooms x $SEED_PEOPLE people, SQLite | $(med startsqlite.ready) ms | <= 2000 |
TABLE
