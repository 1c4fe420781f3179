"""Verifying a cchc-pipeline webhook (docs/WEBHOOKS.md), with nothing but the
standard library. A receiver calls `verify(...)` with its shared secret, the
two headers and the raw body, before it trusts the alert.

As a command (how the project's tests run it): a JSON object on standard
input, {"secret", "timestamp", "signature", "body", "now"?}; exit status 0 if
the request is genuine and fresh, 1 if not (the reason on standard error).
"""

import hashlib
import hmac
import json
import sys
import time

TOLERANCE_SECONDS = 300


def verify(secret: str, timestamp: str, signature: str, body: bytes, now: float = None) -> None:
    """Raises ValueError unless `signature` (X-Cchc-Signature) is the
    HMAC-SHA256 of `<timestamp>.<body>` with `secret` and `timestamp`
    (X-Cchc-Timestamp) is within TOLERANCE_SECONDS of now."""
    now = time.time() if now is None else now
    if not timestamp.isdigit() or abs(now - int(timestamp)) > TOLERANCE_SECONDS:
        raise ValueError("stale or missing timestamp")
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    if not hmac.compare_digest("sha256=" + mac.hexdigest(), signature):
        raise ValueError("bad signature")


if __name__ == "__main__":
    request = json.load(sys.stdin)
    try:
        verify(
            request["secret"],
            request["timestamp"],
            request["signature"],
            request["body"].encode(),
            request.get("now"),
        )
    except ValueError as e:
        print(e, file=sys.stderr)
        sys.exit(1)
