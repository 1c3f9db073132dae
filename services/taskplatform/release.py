"""What the API does for blue-green releases: it sends the tasks created through the preview
route to its own colour's workers."""

from __future__ import annotations

from fastapi import Request

from taskplatform import queue

# Set by the edge's preview server (which routes to the colour being released); the
# user-facing server always clears it.
PREVIEW_HEADER = "x-shipyard-preview"


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
