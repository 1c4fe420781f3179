#!/usr/bin/env bash
# The main job on this machine, end to end: starts the real Kafka broker and
# PostgreSQL (as the tests do), runs the pipeline (`cchc run`), feeds it a
# simulated year of the nine Long Mỹ communes, waits until every event is
# projected, prints each commune's indicators against its targets, and stops
# everything. DEMO_EVENTS sets the volume (default 200000).
set -euo pipefail
cd "$(dirname "$0")/.."

events="${DEMO_EVENTS:-200000}"
export CCHC_DATABASE__URL="postgres://postgres@127.0.0.1:${PGPORT:-5432}/cchc"
export CCHC_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:${KAFKA_PORT:-9092}"
pipeline=""

cleanup() {
    if [ -n "$pipeline" ] && kill -0 "$pipeline" 2>/dev/null; then
        kill -TERM "$pipeline" 2>/dev/null || true
        wait "$pipeline" 2>/dev/null || true
    fi
    bash scripts/kafka.sh stop >/dev/null 2>&1 || true
    bash scripts/postgres.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "demo: building cchc"
cargo build --quiet --bin cchc
echo "demo: starting Kafka and PostgreSQL"
bash scripts/kafka.sh start &
kafka=$!
bash scripts/postgres.sh start
wait "$kafka"
psql -h 127.0.0.1 -p "${PGPORT:-5432}" -U postgres -qc "CREATE DATABASE cchc" 2>/dev/null || true

./target/debug/cchc check-config config/default.toml
echo "demo: producing $events simulated events"
./target/debug/cchc simulate --events "$events" --partitions 3
mkdir -p var
echo "demo: running the pipeline (log in var/demo-pipeline.log)"
./target/debug/cchc run --config config/default.toml 2>var/demo-pipeline.log &
pipeline=$!

started=$(date +%s)
while :; do
    done_count=$(psql -h 127.0.0.1 -p "${PGPORT:-5432}" -U postgres -d cchc -tAc \
        "SELECT COALESCE(sum(next_offset), 0) FROM partition_offsets" 2>/dev/null || echo 0)
    echo "demo: projected $done_count of $events events"
    [ "${done_count:-0}" -ge "$events" ] && break
    if ! kill -0 "$pipeline" 2>/dev/null; then
        echo "demo: the pipeline stopped; its log:" >&2
        tail -n 30 var/demo-pipeline.log >&2
        exit 1
    fi
    if [ $(( $(date +%s) - started )) -gt 600 ]; then
        echo "demo: not done within 10 minutes" >&2
        exit 1
    fi
    sleep 2
done
echo "demo: all $events events projected in $(( $(date +%s) - started )) s"
./target/debug/cchc report --window ytd
