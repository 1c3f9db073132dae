"""The list's page cursor: where the next page starts (the last task's creation time and id),
opaque to clients."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid

from taskplatform.errors import ApiError


def encode_cursor(task: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps([task["created_at"], task["id"]]).encode()).decode()


CURSOR_MAX_LENGTH = 512  # the API's own are ~100 characters


def decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    """Anything but a cursor this API returned is the client's mistake: a 400, never a 500."""
    try:
        if len(cursor) > CURSOR_MAX_LENGTH:
            raise ValueError("too long")
        created, task_id = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        if not isinstance(created, str) or not isinstance(task_id, str):
            raise ValueError("not [timestamp, id]")
        after = dt.datetime.fromisoformat(created)
        if after.tzinfo is None:
            raise ValueError("timestamp without a time zone")
        return after.astimezone(dt.timezone.utc), uuid.UUID(task_id)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise ApiError(400, "invalid_cursor", "cursor is not one this API returned; start again without it") from None
