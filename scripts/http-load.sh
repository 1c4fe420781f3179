#!/usr/bin/env bash
# Load benchmark of the query API while the pipeline ingests. The one-commune
# query is measured against the trivial /health endpoint of the same server
# as the baseline, in the same run, twice:
#   - at a fixed rate (hey, HTTP_LOAD_RATE requests/s, default 2000): p50, p99;
#   - flat out (wrk): the most requests/s the server answers.
#
#   bash scripts/http-load.sh            embedded demo: in-process Kafka, SQLite
#   bash scripts/http-load.sh postgres   `cchc run` on the real broker and PostgreSQL,
#                                        started (and stopped) by this script, fed by
#                                        `cchc simulate` during the whole measurement
#
# Environment: LOAD_SECONDS (per phase, default 20), LOAD_CONNECTIONS (wrk,
# default 8), HTTP_LOAD_RATE (default 2000), HTTP_LOAD_EVENTS (events ingested
# meanwhile, default 5,000,000; 400,000 at a set ingest rate), HTTP_LOAD_INGEST_RATE (postgres: events/s fed
# to the pipeline, default 2000, a busy day's live feed many times over;
# "max" replays history as fast as the pipeline takes it). wrk and hey are
# installed from Debian when missing. Everything runs on the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
store="${1:-sqlite}"
seconds="${LOAD_SECONDS:-20}"
connections="${LOAD_CONNECTIONS:-8}"
rate="${HTTP_LOAD_RATE:-2000}"
ingest_rate="${HTTP_LOAD_INGEST_RATE:-2000}"
if [[ "$store" == postgres && "$ingest_rate" != max ]]; then
    events="${HTTP_LOAD_EVENTS:-400000}" # outlasts the four phases at that rate
else
    events="${HTTP_LOAD_EVENTS:-5000000}"
fi
case "$store" in sqlite | postgres) ;; *)
    echo "usage: bash scripts/http-load.sh [sqlite|postgres]" >&2
    exit 2
    ;;
esac

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v hey >/dev/null || missing+=(hey)
if ((${#missing[@]} > 0)); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release --quiet --bin cchc
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=var/http-load
mkdir -p "$dir"
rm -f "$dir"/demo.sqlite*

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ "$store" == postgres ]]; then
        bash scripts/kafka.sh stop >/dev/null 2>&1 || true
        bash scripts/postgres.sh stop >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

if [[ "$store" == sqlite ]]; then
    ./target/release/cchc demo --events "$events" --listen "127.0.0.1:$port" --database "$dir/demo.sqlite" \
        >"$dir/pipeline.log" 2>&1 &
    pids+=($!)
else
    export KAFKA_PORT="${KAFKA_PORT:-9092}" PGPORT="${PGPORT:-5432}"
    bash scripts/kafka.sh start &
    kafka=$!
    bash scripts/postgres.sh start
    wait "$kafka"
    psql_db="postgres://postgres@127.0.0.1:$PGPORT/postgres"
    export CCHC_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_PORT"
    export CCHC_KAFKA__TOPIC="http-load-$$"
    export CCHC_ALERTS__TOPIC="http-load-alerts-$$"
    export CCHC_DATABASE__URL="$psql_db"
    export CCHC_HTTP__LISTEN="127.0.0.1:$port"
    # The topic first (the simulator creates it), then the pipeline reads it
    # from the start while the simulator keeps producing.
    pace=()
    [[ "$ingest_rate" == max ]] || pace=(--rate "$ingest_rate")
    ./target/release/cchc simulate --events "$events" --partitions 3 "${pace[@]}" >"$dir/simulate.log" 2>&1 &
    pids+=($!)
    sleep 3
    ./target/release/cchc run >"$dir/pipeline.log" 2>&1 &
    pids+=($!)
fi
for _ in $(seq 150); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    sleep 0.2
done
sleep 5 # let ingestion get going

auth='Authorization: Bearer demo-read-token'
health="http://127.0.0.1:$port/health"
query="http://127.0.0.1:$port/api/v1/communes/31471/indicators?window=ytd"
records() { curl -s "http://127.0.0.1:$port/metrics" | awk '/^cchc_records_total/ {print $2}'; }

# hey: `-c` workers of `-q` requests/s each.
fixed() {
    local workers=20
    hey -z "${seconds}s" -c "$workers" -q "$((rate / workers))" -H "$auth" "$1" |
        awk '/Requests\/sec/ {rps=$2} $1 == "50%" {p50=$3*1000} $1 == "99%" {p99=$3*1000}
             $1 ~ /^\[[0-9]+\]$/ && $1 != "[200]" {bad+=$2} /^Error distribution/ {bad+=1}
             END {printf "%.0f %.2f %.2f %d\n", rps, p50, p99, bad}'
}
flat() {
    wrk -t2 -c"$connections" -d"${seconds}s" --latency -H "$auth" "$1" |
        awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} END {print rps, p50, p99}'
}

before=$(records)
started=$SECONDS
read -r fb_rps fb_p50 fb_p99 fb_bad < <(fixed "$health")
read -r fq_rps fq_p50 fq_p99 fq_bad < <(fixed "$query")
read -r wb_rps wb_p50 wb_p99 < <(flat "$health")
read -r wq_rps wq_p50 wq_p99 < <(flat "$query")
after=$(records)
ingest=$(python3 -c "print(f'{(float(\"${after:-0}\") - float(\"${before:-0}\")) / $((SECONDS - started)):,.0f}')")

echo
echo "store: $store; the pipeline ingested $ingest records/s during the measurement"
echo "(cchc_records_total $before -> $after)"
echo
echo "fixed rate, hey -c 20 at $rate requests/s in all, ${seconds}s each:"
printf '  %-36s %8s req/s   p50 %7s ms   p99 %7s ms   not 200: %s\n' "GET /health (baseline)" "$fb_rps" "$fb_p50" "$fb_p99" "$fb_bad"
printf '  %-36s %8s req/s   p50 %7s ms   p99 %7s ms   not 200: %s\n' "GET one commune's indicators (ytd)" "$fq_rps" "$fq_p50" "$fq_p99" "$fq_bad"
python3 -c "print(f'  query / baseline p99: {float(\"$fq_p99\") / float(\"$fb_p99\"):.2f}x')"
echo
echo "flat out, wrk -t2 -c$connections, ${seconds}s each:"
printf '  %-36s %8s req/s   p50 %9s   p99 %9s\n' "GET /health (baseline)" "$wb_rps" "$wb_p50" "$wb_p99"
printf '  %-36s %8s req/s   p50 %9s   p99 %9s\n' "GET one commune's indicators (ytd)" "$wq_rps" "$wq_p50" "$wq_p99"
python3 -c "print(f'  query / baseline throughput: {float(\"$wq_rps\") / float(\"$wb_rps\"):.2f}x')"
