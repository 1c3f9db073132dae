"""Container health probes (`taskplatform healthcheck api|worker`).

Kept free of pydantic and the app's imports: a probe runs in a fresh interpreter every time
Docker asks, and importing the settings stack costs ~4x the check itself (0.2 s vs 0.05 s of
CPU). Reads the same TASKS_* variables as ``taskplatform.settings.ProcessSettings``, whose
defaults come from here.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request

DEFAULT_API_PORT = 8000
DEFAULT_HEARTBEAT_FILE = "/tmp/taskplatform-worker.heartbeat"
HEARTBEAT_MAX_AGE_S = 15


def check(what: str) -> int:
    if what == "api":
        port = int(os.environ.get("TASKS_API_PORT", DEFAULT_API_PORT))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=3) as reply:
                return 0 if reply.status == 200 else 1
        except Exception as exc:  # noqa: BLE001
            print(f"api not ready: {exc}", file=sys.stderr)
            return 1
    heartbeat = os.environ.get("TASKS_HEARTBEAT_FILE", DEFAULT_HEARTBEAT_FILE)
    try:
        age = time.time() - os.stat(heartbeat).st_mtime
    except OSError:
        print("worker has not started its loop yet (no heartbeat file)", file=sys.stderr)
        return 1
    if age > HEARTBEAT_MAX_AGE_S:
        print(f"worker heartbeat is {age:.0f}s old", file=sys.stderr)
        return 1
    return 0
