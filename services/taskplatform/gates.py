"""What the runtime config lets into the API, read at each request from the config source, so a
pushed change holds from the next request on, without a restart: no writes in maintenance, no
creates of a disabled task kind. (The workers' side of the kinds is the claim's: ``worker``.)"""

from __future__ import annotations

from taskplatform.errors import ApiError
from taskplatform.runtime_config import RuntimeConfig

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def check_writes_open(config: RuntimeConfig, method: str, path: str) -> None:
    """Every route's first check (``deps.writes_open``): in maintenance a write under /v1/ is
    refused, 503 ``maintenance`` with Retry-After. It runs before authentication and the rate
    limit, so a refusal costs no Redis call. Reads, health and metrics go on: a readiness failing
    for maintenance would take every API out of rotation, reads included."""
    if config.maintenance and method in WRITE_METHODS and path.startswith("/v1/"):
        raise ApiError(503, "maintenance", "the platform is in maintenance: writes are paused, reads work; "
                                           "retry after Retry-After",
                       {"Retry-After": str(config.maintenance_retry_after_seconds)})


def check_kind_enabled(config: RuntimeConfig, kind: str, field: str = "") -> None:
    """A create of a kind the runtime config disables is refused, 409 ``kind_disabled``: the
    request is valid, the platform's state refuses it for now (as it would a task in the wrong
    state), and it is accepted again once the kind is enabled. ``field``: the item of a batch
    (``tasks.3.``), named first in the message."""
    if kind not in config.runnable_kinds():
        raise ApiError(409, "kind_disabled", f"{field}task kind {kind!r} is disabled by the runtime config (enabled_kinds: "
                                             f"{config.runnable_kinds()}); it is accepted again once enabled")
