"""Sends an NDJSON file of version-1 events to cchc-pipeline over HTTP
(POST /api/v1/events), 500 events per request, with the standard library
only.

    CCHC_URL=https://cchc.example.gov.vn CCHC_TOKEN=... python3 send_events.py events.ndjson

After a 503 (Kafka busy or down) or a lost answer it sends the same request
again: events already written are recognised downstream as repeats. Exit
status 0 when every event was written, 1 otherwise (the refused ones are
printed with their line, reason code, field and reason).
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

BATCH = 500


def send(url, token, body, attempts=10):
    """The answer to one request, sent again as it is until Kafka takes it."""
    request = urllib.request.Request(
        url + "/api/v1/events",
        data=body,
        method="POST",
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/x-ndjson"},
    )
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as e:
            if e.code == 422:  # every event refused: the answer says why
                return json.load(e)
            if e.code != 503:
                sys.exit(f"refused ({e.code}): {e.read().decode()}")
            wait = int(e.headers.get("Retry-After", "5"))
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            wait = 5  # the answer was lost: sending the same request again is safe
            print(f"attempt {attempt}: {e}", file=sys.stderr)
        time.sleep(wait)
    sys.exit(f"gave up after {attempts} attempts")


def main():
    url, token = os.environ["CCHC_URL"], os.environ["CCHC_TOKEN"]
    with open(sys.argv[1], "rb") as f:
        lines = [line if line.endswith(b"\n") else line + b"\n" for line in f]
    accepted = refused = 0
    for start in range(0, len(lines), BATCH):
        answer = send(url, token, b"".join(lines[start : start + BATCH]))
        accepted += answer["accepted"]
        for e in answer["events"]:
            if e["status"] == "refused":
                refused += 1
                field = f" ({e['field']})" if e.get("field") else ""
                print(f"line {start + e['line']}: {e['reason_code']}{field}: {e['reason']}", file=sys.stderr)
    print(f"{accepted} events written, {refused} refused")
    sys.exit(1 if refused else 0)


if __name__ == "__main__":
    main()
