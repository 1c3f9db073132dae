"""What the API does for blue-green releases: it says which release answered (``X-Release``),
and sends the tasks created through the preview route to its own colour's workers."""

from __future__ import annotations

from fastapi import Request

from taskplatform import queue

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


def task_stream_for(colour: str):
    """A FastAPI dependency: the stream a task this request creates or re-drives goes on — its
    colour's stream when the request came through the preview route, so that this colour's
    workers run it (the release's smoke test checks they do), else the shared one. A preview
    task whose colour has no worker is still run: PostgreSQL is the truth, and any worker
    recovers a task queued longer than ``reconcile_after_seconds``."""
    preview_stream = queue.colour_stream(colour) if colour else queue.STREAM

    def task_stream(request: Request) -> str:
        return preview_stream if request.headers.get(PREVIEW_HEADER) == "1" else queue.STREAM

    return task_stream

