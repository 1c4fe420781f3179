#!/usr/bin/env bash
# The project's whole test suite against a real Kafka broker and a real
# PostgreSQL, which this script installs/fetches if needed, starts, and always
# stops again. On a fresh machine:
#
#   bash scripts/test.sh                     fmt check, clippy, cargo test --all-targets
#   bash scripts/test.sh -- some_filter      same, with a test-name filter for cargo test
#   bash scripts/test.sh --test it -- kafka  anything not starting with `--` alone replaces
#                                            --all-targets: `cargo test --test it -- kafka`
#   TEST_SKIP_LINT=1 bash scripts/test.sh    skip fmt and clippy (quick local iterations)
#
# Ports: KAFKA_PORT (default 9092, controller on KAFKA_PORT+1, SASL_SSL on
# KAFKA_PORT+2) and PGPORT (default 5432). The tests get
# KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL, and read the SASL_SSL listener's
# client settings from var/kafka/client/client.properties.
# On failure the tails of both services' logs are printed, then the phase
# that failed and, for the tests, cargo's failure report.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export KAFKA_PORT="${KAFKA_PORT:-9092}"
export PGPORT="${PGPORT:-5432}"
TEST_SKIP_LINT="${TEST_SKIP_LINT:-0}"
STATE_DIR="$ROOT/var/test"

SUITE_STARTED=$SECONDS
PHASE_STARTED=$SECONDS
PHASE="setup"
phase() {
    PHASE_STARTED=$SECONDS
    PHASE="$*"
    echo
    echo "==> $*"
}
phase_done() { echo "    ($((SECONDS - PHASE_STARTED)) s)"; }

KAFKA_START_PID=""
SERVICES_STARTED=0
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$KAFKA_START_PID" ]]; then
        # A start still in progress: let it finish or fail so its JVM can be stopped.
        wait "$KAFKA_START_PID" 2>/dev/null || true
    fi
    if ((rc != 0 && SERVICES_STARTED)); then
        echo
        echo "==> test run failed (exit $rc); service logs follow"
        [[ -s "$STATE_DIR/kafka-start.log" ]] && cat "$STATE_DIR/kafka-start.log"
        bash scripts/kafka.sh logs 200 2>/dev/null |
            grep -v -e EventPerformanceMonitor -e PeriodicTaskControlManager |
            tail -n 40 || true
        bash scripts/postgres.sh logs 40 || true
    fi
    if ((rc != 0)); then
        # Last, so that it is what a truncated CI log still shows.
        echo
        echo "==> FAILED in phase: $PHASE (exit $rc)"
        if [[ "$PHASE" == "cargo test"* && -s "$STATE_DIR/cargo-test.log" ]]; then
            echo "---- failures reported by cargo test ----"
            grep -E -A 30 '^failures:$|panicked at|^error(\[|:)' "$STATE_DIR/cargo-test.log" |
                tail -n 120 || true
            grep -E '^test result:|^error: test failed' "$STATE_DIR/cargo-test.log" || true
        fi
    fi
    echo
    echo "==> stopping services"
    bash scripts/kafka.sh stop || true
    bash scripts/postgres.sh stop-all || true
    echo "==> total $((SECONDS - SUITE_STARTED)) s, exit $rc"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ "$TEST_SKIP_LINT" != 1 ]]; then
    phase "cargo fmt --all -- --check"
    cargo fmt --all -- --check
    phase_done
fi

# Leftovers of an earlier run that was killed before its trap could run.
bash scripts/kafka.sh stop >/dev/null 2>&1 || true
bash scripts/postgres.sh stop-all >/dev/null 2>&1 || true
rm -rf "$STATE_DIR" "$ROOT"/var/postgres-*
mkdir -p "$STATE_DIR"

# Kafka (a JVM, several seconds) starts in the background while PostgreSQL
# starts and clippy runs; both must be up before the tests.
phase "starting Kafka (background) and PostgreSQL"
SERVICES_STARTED=1
bash scripts/kafka.sh start >"$STATE_DIR/kafka-start.log" 2>&1 &
KAFKA_START_PID=$!
bash scripts/postgres.sh start
phase_done

if [[ "$TEST_SKIP_LINT" != 1 ]]; then
    phase "cargo clippy --all-targets -- -D warnings"
    cargo clippy --all-targets -- -D warnings
    phase_done
fi

phase "waiting for Kafka"
if ! wait "$KAFKA_START_PID"; then
    KAFKA_START_PID=""
    echo "Kafka did not start" >&2
    exit 1
fi
KAFKA_START_PID=""
cat "$STATE_DIR/kafka-start.log"
phase_done

export KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_PORT"
export DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/postgres"

if (($# == 0)) || [[ "$1" == -- ]]; then
    phase "cargo test --all-targets $*"
    cargo test --all-targets "$@" 2>&1 | tee "$STATE_DIR/cargo-test.log"
else
    phase "cargo test $*"
    cargo test "$@" 2>&1 | tee "$STATE_DIR/cargo-test.log"
fi
phase_done

# The dashboard in a real headless browser (needs no broker or database:
# it drives the embedded demo). Part of the full run only.
if (($# == 0)); then
    phase "browser test (dashboard)"
    # `cargo test` has just built target/debug/cchc (the integration tests run
    # it); `cargo build` would compile everything again with other features.
    BROWSER_TEST_SKIP_BUILD=1 bash scripts/browser-test.sh
    phase_done

    # The API against its OpenAPI document (Schemathesis, on the demo).
    phase "API test (Schemathesis)"
    API_TEST_SKIP_BUILD=1 bash scripts/api-test.sh
    phase_done
fi
