"""The work every system of the bench runs, the same for each: the platform's built-in kinds
`checksum` and `sleep` (``taskplatform_demo_kinds``), written again here for the peers' workers.
Standard library only: it is imported by the peers' workers, in the peers' venv."""

from __future__ import annotations

import hashlib
import json
import os
import time


def checksum(payload: dict) -> dict:
    """The `checksum` kind: the SHA-256 of the payload's canonical JSON (``taskplatform.kinds.canonical_json``)."""
    return {"sha256": hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()}


def slow(index: int, seconds: float, marker_file: str) -> dict:
    """The `sleep` kind, and a line in ``marker_file`` when it starts and when it ends: which
    process ran task ``index``, and how often it was started (a kill -9 bench needs to know
    that a worker died with the task in hand, and that it ran again)."""
    _mark(marker_file, "start", index)
    time.sleep(seconds)
    _mark(marker_file, "end", index)
    return {"slept": seconds}


def _mark(marker_file: str, event: str, index: int) -> None:
    # One write of a short line with O_APPEND: the lines of concurrent processes do not mix.
    fd = os.open(marker_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{event} {index} {os.getpid()}\n".encode())
    finally:
        os.close(fd)
