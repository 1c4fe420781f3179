#!/usr/bin/env bash
# End-to-end test of the dashboard (src/http/dashboard.html) in a real
# headless browser: Debian's Chromium, driven by playwright-core from
# tests/browser/dashboard.test.mjs (`node --test`), against `cchc demo`
# (in-process Kafka and SQLite: nothing else to start).
#
#   bash scripts/browser-test.sh
#
# Installs Chromium with apt-get when it is missing, the npm package
# (npm ci) in tests/browser, builds cchc, and runs the test. Exits non-zero
# when anything fails, printing the tail of the demo's log.
#
# Output: var/browser-test/dashboard.png (screenshot), var/browser-test/demo.log
# (the demo's output), var/browser-test/failure.png (the page, on failure).
#
# Environment: CHROMIUM_PATH (default /usr/bin/chromium),
# BROWSER_TEST_SKIP_BUILD=1 (use target/debug/cchc as it is),
# BROWSER_TEST_EVENTS (demo events, default 20000).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STARTED=$SECONDS

export CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
# Not CCHC_*: the pipeline reads those as configuration.
export BROWSER_TEST_BIN="$ROOT/target/debug/cchc"

if [[ ! -x "$CHROMIUM_PATH" ]]; then
    echo "==> installing chromium (apt-get)"
    sudo=""
    if ((EUID != 0)); then sudo="sudo"; fi
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y chromium
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "browser-test: node and npm (Node.js 20 or newer) are needed" >&2
    exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if ((node_major < 20)); then
    echo "browser-test: Node.js 20 or newer is needed, found $(node --version)" >&2
    exit 1
fi

echo "==> npm ci (tests/browser)"
(cd tests/browser && npm ci --no-audit --no-fund --prefer-offline --loglevel=error)

if [[ "${BROWSER_TEST_SKIP_BUILD:-0}" != 1 ]]; then
    # Cargo's own build-directory lock makes this wait for any other build.
    echo "==> cargo build --bin cchc"
    cargo build --bin cchc
fi

echo "==> node --test tests/browser/dashboard.test.mjs"
rc=0
(cd tests/browser && node --test dashboard.test.mjs) || rc=$?
if ((rc == 0)); then
    echo "==> browser test passed in $((SECONDS - STARTED)) s; screenshot: var/browser-test/dashboard.png"
else
    echo "==> browser test FAILED (exit $rc) after $((SECONDS - STARTED)) s;" \
        "see var/browser-test/demo.log and var/browser-test/failure.png" >&2
    if [[ -s var/browser-test/demo.log ]]; then
        echo "---- last 40 lines of var/browser-test/demo.log ----" >&2
        tail -n 40 var/browser-test/demo.log >&2
    fi
fi
exit "$rc"
