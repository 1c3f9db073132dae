"""One deploy of an environment at a time on this machine: an flock on
``$SHIPYARD_LOCK_DIR/<env>.lock`` (default ``/run/lock/shipyard``), shared by every checkout —
two clones of the repo deploying the same environment queue behind each other.

The lock is held by the open file, so it is released when the process ends, even on kill -9;
the file also records who holds it (pid and checkout), for the message the second deploy prints.
Deploys of one environment from different machines do not meet here but on each host, at
the lock shipyard/apply/hostlock.py takes first (docs/deploy.md).
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path

from shipyard.errors import LockError

LOCK_DIR_VAR = "SHIPYARD_LOCK_DIR"
DEFAULT_LOCK_DIR = "/run/lock/shipyard"


def lock_path(env: str, environ: dict[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get(LOCK_DIR_VAR) or DEFAULT_LOCK_DIR) / f"{env}.lock"


@contextmanager
def environment_lock(repo: Path, env: str, wait_s: float = 0.0, environ: dict[str, str] | None = None):
    path = lock_path(env, environ)
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
    handle.write(f"pid {os.getpid()} of checkout {repo} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    handle.flush()
    try:
        yield
    finally:
        handle.truncate(0)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
