"""Schemathesis hooks for `scripts/api-test.sh`.

The OpenAPI document (docs/openapi.json) states every bound of the API that
JSON Schema can state. One it cannot: a window `FROM..TO` is a range only
when TO comes after FROM (else the server answers 400, as documented); so
is a report's `period`. The
generator draws FROM and TO independently, so half of its ranges would be
reversed; `map_query` puts them in order, the one adjustment made to the
generated requests. And `ndjson` writes bodies of application/x-ndjson (a
media type Schemathesis has no serializer for) as JSON lines.
"""

import datetime
import re

import schemathesis

DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
RANGE = re.compile(rf"^({DATE})\.\.({DATE})$")


def _day(text):
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        return None


def _ordered(text):
    """A FROM..TO range with its dates in order (TO after FROM)."""
    m = RANGE.match(text)
    if not m:
        return text
    a, b = _day(m.group(1)), _day(m.group(2))
    if a is None or b is None or a < b:
        return text
    if a == b:
        if b < datetime.date(9999, 12, 31):
            b = b + datetime.timedelta(days=1)
        else:
            a = a - datetime.timedelta(days=1)
    else:
        a, b = b, a
    return f"{a.isoformat()}..{b.isoformat()}"


@schemathesis.hook
def map_query(ctx, query):
    if not query:
        return query
    for name in ("window", "period"):
        if isinstance(query.get(name), str):
            query[name] = _ordered(query[name])
    return query


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    """Newline-delimited JSON: a generated list is one record per line,
    anything else one line."""
    import json

    items = value if isinstance(value, list) else [value]
    return "".join(json.dumps(item) + "\n" for item in items).encode()
