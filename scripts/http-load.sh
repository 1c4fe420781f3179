#!/usr/bin/env bash
# Load benchmark of the query API while the pipeline ingests: the embedded
# demo (release build) ingests a simulated history while wrk hits the
# one-commune query and, in the same run, the trivial /health endpoint of
# the same server as the baseline. Prints requests/s and latency
# percentiles for both. wrk is installed from Debian when missing.
#
#   bash scripts/http-load.sh            (LOAD_SECONDS=20 LOAD_CONNECTIONS=8)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${LOAD_SECONDS:-20}"
connections="${LOAD_CONNECTIONS:-8}"

if ! command -v wrk >/dev/null; then
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --release --quiet --bin cchc
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p var/http-load
rm -f var/http-load/demo.sqlite*
./target/release/cchc demo --events 5000000 --listen "127.0.0.1:$port" --database var/http-load/demo.sqlite \
    >var/http-load/demo.log 2>&1 &
demo=$!
trap 'kill -TERM $demo 2>/dev/null || true; wait $demo 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    sleep 0.2
done
sleep 5 # let ingestion get going

run() {
    wrk -t2 -c"$connections" -d"${seconds}s" --latency -H 'Authorization: Bearer demo-read-token' "$1" \
        | awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} END {print rps, p50, p99}'
}
read -r base_rps base_p50 base_p99 < <(run "http://127.0.0.1:$port/health")
read -r q_rps q_p50 q_p99 < <(run "http://127.0.0.1:$port/api/v1/communes/31471/indicators?window=ytd")
projected=$(grep -c . var/http-load/demo.log || true)
echo "while ingesting (embedded demo, release build), wrk -t2 -c$connections -d${seconds}s:"
printf '%-34s %10s req/s   p50 %8s   p99 %8s\n' "GET /health (baseline)" "$base_rps" "$base_p50" "$base_p99"
printf '%-34s %10s req/s   p50 %8s   p99 %8s\n' "GET one commune's indicators (ytd)" "$q_rps" "$q_p50" "$q_p99"
python3 -c "print(f'query / baseline throughput: {float(\"$q_rps\") / float(\"$base_rps\"):.2f}x')"
curl -s http://127.0.0.1:"$port"/metrics | grep -E '^cchc_records_total' || true
