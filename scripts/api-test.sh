#!/usr/bin/env bash
# The HTTP API against its own OpenAPI document: Schemathesis (pinned below,
# installed from PyPI into a virtualenv under ~/.cache/cchc-pipeline) runs
# `st run --checks all` on the `/openapi.json` served by `cchc demo`
# (in-process Kafka and SQLite: nothing else to start), each operation with
# the demo's token of the kind it needs (tests/api/schemathesis.toml).
# Every check must pass: a schema-valid request the server refuses, an
# invalid one it takes, an undocumented status, content type or header, a
# 5xx, a response that does not match its schema.
#
#   bash scripts/api-test.sh
#
# The live streams (/api/v1/*/stream) are left out: they never end, and
# their tests are the Rust ones. One adjustment to generated requests, the
# order of a window's two dates, is made in tests/api/schemathesis_hooks.py.
#
# Output: var/api-test/ (the demo's log, Schemathesis's JUnit report).
# Environment: API_TEST_SKIP_BUILD=1 (use target/debug/cchc as it is),
# API_TEST_SEED (default 1; the same requests every run), API_TEST_EXAMPLES
# (Schemathesis --max-examples per operation, default 100).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STARTED=$SECONDS

SCHEMATHESIS_VERSION="4.32.5"
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/cchc-pipeline/schemathesis-$SCHEMATHESIS_VERSION"
OUT="$ROOT/var/api-test"
rm -rf "$OUT"
mkdir -p "$OUT"

if [[ ! -x "$VENV/bin/st" ]]; then
    echo "==> installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV"; then
        # Debian's python3 lacks ensurepip without python3-venv.
        echo "==> installing python3-venv (apt-get)"
        sudo=""
        if ((EUID != 0)); then sudo="sudo"; fi
        $sudo apt-get update
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y python3-venv
        rm -rf "$VENV"
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

if [[ "${API_TEST_SKIP_BUILD:-0}" != 1 ]]; then
    echo "==> cargo build --bin cchc"
    cargo build --bin cchc
fi

DEMO_PID=""
stop_demo() {
    if [[ -n "$DEMO_PID" ]] && kill -0 "$DEMO_PID" 2>/dev/null; then
        kill -TERM "$DEMO_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$DEMO_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$DEMO_PID" 2>/dev/null || true
    fi
}
trap stop_demo EXIT

echo "==> cchc demo (20,000 events, port chosen by the system)"
target/debug/cchc demo --events 20000 --database "$OUT/demo.sqlite" --listen 127.0.0.1:0 \
    >"$OUT/demo.out" 2>"$OUT/demo.log" &
DEMO_PID=$!
addr=""
for _ in $(seq 600); do
    addr="$(grep -m1 -o 'dashboard: http://[0-9.:]*' "$OUT/demo.out" 2>/dev/null | sed 's/dashboard: //' || true)"
    [[ -n "$addr" ]] && break
    kill -0 "$DEMO_PID" 2>/dev/null || break
    sleep 0.1
done
if [[ -z "$addr" ]]; then
    echo "api-test: the demo did not start; its log:" >&2
    tail -n 40 "$OUT/demo.log" >&2
    exit 1
fi
echo "    serving on $addr"

echo "==> st run $addr/openapi.json --checks all (schemathesis $SCHEMATHESIS_VERSION)"
rc=0
# From var/api-test/: Schemathesis keeps its cache in the working directory.
cd "$OUT"
SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH="$ROOT/tests/api" \
    "$VENV/bin/st" --config-file "$ROOT/tests/api/schemathesis.toml" run "$addr/openapi.json" \
    --checks all \
    --exclude-path-regex '/stream$' \
    --seed "${API_TEST_SEED:-1}" \
    --max-examples "${API_TEST_EXAMPLES:-100}" \
    --request-timeout 20 \
    --report junit --report-junit-path "$OUT/junit.xml" \
    --no-color || rc=$?

if ((rc != 0)); then
    echo "==> api test FAILED (exit $rc); the demo's log ends:" >&2
    tail -n 20 "$OUT/demo.log" >&2
    exit "$rc"
fi
echo "==> api test passed in $((SECONDS - STARTED)) s"
