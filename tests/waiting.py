"""Waiting for a condition in the tests that run against real servers: poll it until a deadline,
never sleep a guessed time."""

from __future__ import annotations

import time


def wait_for(what: str, check, timeout_s: float, interval_s: float = 0.2):
    """``check()``'s first truthy value, polled until ``timeout_s``; else fail saying ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(interval_s)
