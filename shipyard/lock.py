"""One deploy of an environment at a time, per controller: an flock on .shipyard/locks/<env>.lock.

The lock is held by the open file, so it is released when the process ends, even on kill -9;
the file also records who holds it, for the message the second deploy prints.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path

from shipyard.errors import LockError


@contextmanager
def environment_lock(repo: Path, env: str, wait_s: float = 0.0):
    path = repo / ".shipyard" / "locks" / f"{env}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.seek(0)
                holder = handle.read().strip() or "unknown process"
                handle.close()
                raise LockError(f"environment {env}", f"another deploy holds the lock ({holder})",
                                f"wait for it to finish, or retry with LOCK_WAIT=<seconds> to queue behind it "
                                f"(lock file {path})") from None
            time.sleep(0.5)
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    handle.flush()
    try:
        yield
    finally:
        handle.truncate(0)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
