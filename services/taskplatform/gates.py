"""What the runtime config lets into the API, read at each request from the config source, so a
pushed change holds from the next request on, without a restart: no writes in maintenance, no
creates of a disabled task kind. (The workers' side of the kinds is the claim's: ``worker``.)"""

from __future__ import annotations

from taskplatform.errors import ApiError, error_response
from taskplatform.runtime_config import ConfigSource, RuntimeConfig

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def check_writes_open(config: RuntimeConfig, method: str, path: str) -> None:
    """Every request's first check (``WritesGate``): in maintenance a write under /v1/ is
    refused, 503 ``maintenance`` with Retry-After. It runs before authentication and the rate
    limit, so a refusal costs no Redis call. Reads, health and metrics go on: a readiness failing
    for maintenance would take every API out of rotation, reads included."""
    if config.maintenance and method in WRITE_METHODS and path.startswith("/v1/"):
        raise ApiError(503, "maintenance", "the platform is in maintenance: writes are paused, reads work; "
                                           "retry after Retry-After",
                       {"Retry-After": str(config.maintenance_retry_after_seconds)})


class WritesGate:
    """Raw ASGI middleware: ``check_writes_open`` on every request, its refusal in the one error
    shape. A middleware, not a dependency of the app: FastAPI's dependency solver cost ~5 % of a
    create's CPU for each dependency (issue 23's submit rate). It sees the path before routing,
    so in maintenance a write to a path that does not exist is refused 503 too, not 404/405."""

    def __init__(self, app, config: ConfigSource):
        self.app, self.config = app, config

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            try:
                check_writes_open(self.config.config, scope["method"], scope["path"])
            except ApiError as exc:
                response = error_response(scope.get("request_id", ""), exc.status, exc.code, exc.message, exc.headers)
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


def check_kind_enabled(config: RuntimeConfig, kind: str, field: str = "") -> None:
    """A create of a kind the runtime config disables is refused, 409 ``kind_disabled``: the
    request is valid, the platform's state refuses it for now (as it would a task in the wrong
    state), and it is accepted again once the kind is enabled. ``field``: the item of a batch
    (``tasks.3.``), named first in the message."""
    if kind not in config.runnable_kinds():
        raise ApiError(409, "kind_disabled", f"{field}task kind {kind!r} is disabled by the runtime config (enabled_kinds: "
                                             f"{config.runnable_kinds()}); it is accepted again once enabled")
