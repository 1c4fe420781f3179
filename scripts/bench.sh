#!/usr/bin/env bash
# Runs a benchmark that needs the real broker and database: starts Kafka and
# PostgreSQL (as scripts/test.sh does), runs `cargo bench --bench NAME`, and
# always stops them.
#
#   bash scripts/bench.sh alert_latency
#   bash scripts/bench.sh replay          (REPLAY_SIZES=1000000,5000000)
#   REPLAY_PARTITIONS=24 REPLAY_COMMUNES=120 REPLAY_CASES_PER_DAY=20 bash scripts/bench.sh replay
#                                         (the wide shape: every partition carries events)
#   bash scripts/bench.sh ingest          (POST /api/v1/events against producing straight to Kafka)
#   bash scripts/bench.sh fold            (needs no services, but works too)
#
# PG_EXTRA_CONF: lines appended to the benchmark cluster's postgresql.conf,
# to measure server settings without editing a script, e.g.
#   PG_EXTRA_CONF="shared_buffers = 2GB" bash scripts/bench.sh replay
# (the replay keeps its own pg_stat_statements line before yours).
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:?usage: scripts/bench.sh BENCH_NAME [extra cargo bench args]}"
shift

export KAFKA_PORT="${KAFKA_PORT:-9092}" PGPORT="${PGPORT:-5432}"
cleanup() {
    bash scripts/kafka.sh stop >/dev/null 2>&1 || true
    bash scripts/postgres.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
if [[ "$name" == replay ]]; then
    # Per-statement times of the replay (printed by the benchmark).
    # Settings of your own come after it, e.g. PG_EXTRA_CONF="shared_buffers = 2GB".
    export PG_EXTRA_CONF="shared_preload_libraries = 'pg_stat_statements'${PG_EXTRA_CONF:+
$PG_EXTRA_CONF}"
fi
bash scripts/kafka.sh start &
kafka=$!
bash scripts/postgres.sh start
wait "$kafka"
export KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_PORT"
export DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/postgres"
if [[ "$name" == replay ]]; then
    cargo build --release --bin cchc    # the replay runs the pipeline as its own process
fi
cargo bench --bench "$name" "$@"
