#!/usr/bin/env bash
# Sends an NDJSON file of version-1 events to cchc-pipeline over HTTP
# (POST /api/v1/events), 500 events per request. After a 503 (Kafka busy or
# down) or a lost answer it sends the same request again: events already
# written are recognised downstream as repeats.
#
#   CCHC_URL=https://cchc.example.gov.vn CCHC_TOKEN=... bash send_events.sh events.ndjson
#
# Exit status 0 when every event was written, 1 otherwise (the refused ones
# are printed with their line, reason code and reason).
set -euo pipefail
file="${1:?usage: send_events.sh FILE.ndjson}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
split -l 500 -d -a 6 "$file" "$work/batch-"

refused=0
offset=0
for batch in "$work"/batch-*; do
    status=000
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        status="$(curl -sS -o "$work/answer" -D "$work/headers" -w '%{http_code}' \
            -H "Authorization: Bearer $CCHC_TOKEN" -H 'Content-Type: application/x-ndjson' \
            --data-binary "@$batch" "$CCHC_URL/api/v1/events" || echo 000)"
        case "$status" in
            200 | 422) break ;;
            503 | 000)
                wait="$(grep -i '^retry-after:' "$work/headers" 2>/dev/null | tr -dc '0-9' || true)"
                echo "attempt $attempt: $status, again in ${wait:-5} s" >&2
                sleep "${wait:-5}"
                ;;
            *)
                echo "refused ($status): $(cat "$work/answer")" >&2
                exit 1
                ;;
        esac
    done
    if [[ "$status" != 200 && "$status" != 422 ]]; then
        echo "gave up after 10 attempts" >&2
        exit 1
    fi
    # One line per refused event: line, reason code, reason (python3 only to read the JSON).
    n="$(python3 -c '
import json, sys
offset = int(sys.argv[1])
answer = json.load(open(sys.argv[2]))
for e in answer["events"]:
    if e["status"] == "refused":
        print("line %d: %s: %s" % (offset + e["line"], e["reason_code"], e["reason"]), file=sys.stderr)
print(answer["refused"])' "$offset" "$work/answer")"
    refused=$((refused + n))
    offset=$((offset + $(wc -l <"$batch")))
done
echo "$offset lines sent, $refused events refused"
[[ "$refused" == 0 ]]
