"""The next JWT key set (`make secrets-rotate NAME=jwt_signing_key`): a new signing key first,
the keys before it kept while a token they signed may still be valid. Pure.

The key set's format is the services' (``taskplatform.auth``): ``{"keys": [{"kid", "k"}, ...]}``,
the first key signs, every key verifies; a plain value (a set made before key sets) is a set of
one key whose kid is ``legacy_kid``. A replaced key gets ``retired_at`` (Unix time, an extra
member the services ignore) and is dropped by the first rotation after ``KEEP_RETIRED_S``: the
longest token `taskplatform token` mints (30 days) has expired by then. So a rotation logs no
one out, and a key stops verifying at the latest one rotation after its tokens could have expired.
"""

from __future__ import annotations

import hashlib
import json
import secrets as random_source
import time

KEEP_RETIRED_S = 30 * 86400  # services/taskplatform/cli.py: TOKEN_MAX_TTL_SECONDS


def legacy_kid(key: str) -> str:
    """As the services derive it (taskplatform.auth.legacy_kid)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _entries(current: str) -> list[dict]:
    text = current.strip()
    if not text.startswith("{"):
        return [{"kid": legacy_kid(text), "k": text}]
    return [dict(entry) for entry in json.loads(text)["keys"]]


def next_key_set(current: str, now: float) -> str:
    """``current`` with a new signing key first, the one it replaces retired ``now``, and the keys
    retired more than KEEP_RETIRED_S ago dropped."""
    kept = []
    for n, entry in enumerate(_entries(current)):
        if n == 0:
            entry["retired_at"] = int(now)
        if now - entry.get("retired_at", now) <= KEEP_RETIRED_S:
            kept.append(entry)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    new = {"kid": f"{stamp}-{random_source.token_hex(3)}", "k": random_source.token_urlsafe(32)}
    return json.dumps({"keys": [new, *kept]}, sort_keys=True)
