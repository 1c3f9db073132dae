"""What every adapter's ``outcomes`` answers for each task: ``state`` (succeeded, failed or
pending), ``done_at`` (when its result was stored, epoch seconds) and ``runs`` (how often it
was started, where the system counts it; else None)."""

from __future__ import annotations

PENDING = {"state": "pending", "done_at": None, "runs": None}


def with_pending(ids: list[str], found: dict[str, dict]) -> dict[str, dict]:
    """Each task's outcome; a task the system has no result for yet is pending."""
    return {task_id: found.get(task_id, PENDING) for task_id in ids}
