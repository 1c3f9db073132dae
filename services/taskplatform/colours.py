"""What the API does for blue-green releases: it says which release answered (``X-Release``),
sends the tasks created through the preview route to its own colour's workers, and — in the
release tests only — plays a bad release (``InjectedFaults``)."""

from __future__ import annotations

from collections.abc import Mapping

from taskplatform import queue
from taskplatform.errors import error_response

# Set by the edge's preview server (which routes to the colour being released); the
# user-facing server always clears it.
PREVIEW_HEADER = "x-shipyard-preview"
RELEASE_HEADER = "x-release"


def release_name(colour: str, version: str) -> str:
    """``<colour>/<version>``, as ``X-Release`` says it (``none`` for a process without a colour)."""
    return f"{colour or 'none'}/{version}"


class ReleaseHeader:
    """Raw ASGI middleware, outermost: every answer carries ``X-Release: <colour>/<version>``,
    refusals and errors included, so the deploy can count which colour served each request."""

    def __init__(self, app, colour: str, version: str):
        self.app = app
        self.header = (RELEASE_HEADER.encode(), release_name(colour, version).encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_release(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), self.header]
            await send(message)

        await self.app(scope, receive, with_release)


def task_colour(colour: str, headers: Mapping[str, str]) -> str:
    """The colour whose streams a task a request creates or re-drives goes on (``""``: the
    shared ones): this process's colour when the request came through the preview route, so
    that this colour's workers run it (the release's smoke test checks they do). A preview task
    whose colour has no worker is still run: PostgreSQL is the truth, and any worker recovers a
    task queued longer than ``reconcile_after_seconds``."""
    return colour if headers.get(PREVIEW_HEADER) == "1" else ""


def task_stream(colour: str, headers: Mapping[str, str], queue_name: str = queue.DEFAULT_QUEUE,
                priority: int = queue.DEFAULT_PRIORITY) -> str:
    """The stream a task of ``queue_name`` and ``priority`` a request creates goes on."""
    return queue.stream_for(queue_name, priority, task_colour(colour, headers))


def _preview(scope) -> bool:
    return (PREVIEW_HEADER.encode(), b"1") in scope.get("headers", ())


class InjectedFaults:
    """TEST ONLY (``TASKS_FAULT_ERROR_SHARE``; the product never sets it): raw ASGI middleware
    that answers ``share`` of the requests under ``/v1/`` with 500 ``injected_fault``, in the
    error shape, so the release tests can play a bad release. Inside the request context: the
    faults are logged and counted like real errors. Installed only when the share is above 0.
    The preview route is spared: the bad release passes its smoke test, as a version whose fault
    shows only under real traffic does, and must be caught by the watch after the switch."""

    def __init__(self, app, share: float):
        self.app = app
        self.per_million = round(share * 1_000_000)
        self.seen = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1/") and not _preview(scope) and self._fail_next():
            response = error_response(scope.get("request_id", ""), 500, "injected_fault",
                                      "a fault injected on purpose (TASKS_FAULT_ERROR_SHARE, release tests only)")
            return await response(scope, receive, send)
        await self.app(scope, receive, send)

    def _fail_next(self) -> bool:
        # Not random: each request adds the share, and one fails whenever the sum passes a whole
        # number — exactly ⌊n·share⌋ of n requests, spread evenly, so a test counts them without luck.
        before = self.seen * self.per_million // 1_000_000
        self.seen += 1
        return self.seen * self.per_million // 1_000_000 > before
