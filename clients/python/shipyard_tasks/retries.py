"""When to send a request again, and after how long: pure decisions, shared by the sync and the
async client (which only sleep the way their I/O does).

A request is sent again only when doing so cannot make the API act twice:
- the connection could not be made (the request never left): any request;
- 429, or 503 ``overloaded`` / ``maintenance``: the API refuses those before the request's write
  runs (rate limit, concurrency limit, maintenance gate, or no database connection free for the
  write's one statement): any request;
- a dropped connection, a timeout, any other 502/503/504: the request may have been acted on, so
  only a read (GET, HEAD, DELETE of a key: revoking again changes nothing) or a request carrying
  an ``Idempotency-Key`` (the API answers a replay with the first task).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

SAFE_METHODS = frozenset({"GET", "HEAD", "DELETE"})
# 503 codes of refusals made before the request is looked at (services/README.md "Overload").
REFUSED_UNSEEN = frozenset({"overloaded", "maintenance"})
_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts``: sends at most, the first included (1: never again). Backoff: exponential from
    ``base_seconds``, capped at ``max_backoff_seconds``, with full jitter in [½, 1] of it, so that
    clients refused together do not come back together. A ``Retry-After`` longer than
    ``max_retry_after_seconds`` is not waited for: the error is raised at once (a maintenance
    window may last minutes; a caller should decide to wait that long, not a library)."""

    attempts: int = 4
    base_seconds: float = 0.2
    max_backoff_seconds: float = 5.0
    max_retry_after_seconds: float = 60.0

    def __post_init__(self):
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1 (the first send), got {self.attempts}")

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed send number ``attempt`` (1-based)."""
        ceiling = min(self.max_backoff_seconds, self.base_seconds * 2 ** (attempt - 1))
        return ceiling * (rng or random).uniform(0.5, 1.0)

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random | None = None) -> float | None:
        """How long to wait before send ``attempt + 1``, or None: do not send again (attempts used
        up, or the API asks for a longer wait than this policy allows)."""
        if attempt >= self.attempts:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after_seconds else None
        return self.backoff(attempt, rng)


def may_resend_after_error(method: str, idempotent: bool, error: httpx.TransportError) -> bool:
    if isinstance(error, _UNSENT):
        return True
    return method in SAFE_METHODS or idempotent


def may_resend_after_answer(method: str, idempotent: bool, status: int, code: str | None) -> bool:
    if status == 429 or (status == 503 and code in REFUSED_UNSEEN):
        return True
    if status in (502, 503, 504):
        return method in SAFE_METHODS or idempotent
    return False
