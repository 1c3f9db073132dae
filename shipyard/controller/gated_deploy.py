"""A deploy's pyinfra process started ahead of its arguments (shipyard.apply.pyinfra_gate): it
loads while `make up` imports, validates, renders and waits on the hosts' SSH answers, and runs
only once ``run`` hands it pyinfra's argv. Until then it has read no inventory and touched no
host, so ``abandon`` (a check failed) ends it without a trace.

`python -m shipyard up` starts one first thing (``start_ahead``, before the CLI's own imports:
both load at once on two cores); ``take`` hands it to the deploy, or starts one. Imports nothing
of shipyard's, to stay cheap there."""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
from pathlib import Path


class GatedDeploy:
    def __init__(self, repo: Path) -> None:
        read, self._gate = os.pipe()
        try:
            self._process = subprocess.Popen([sys.executable, "-m", "shipyard.apply.pyinfra_gate", str(read)],
                                             cwd=repo, pass_fds=(read,))
        except BaseException:
            os.close(self._gate)
            raise
        finally:
            os.close(read)

    def run(self, argv: list[str]) -> int:
        """pyinfra run with ``argv`` (its own argv[0] first); its exit code."""
        gate, self._gate = self._gate, None
        try:
            with os.fdopen(gate, "wb") as opened:
                opened.write(json.dumps(argv).encode() + b"\n")
        except BrokenPipeError:
            pass  # it ended before the gate opened (its own error is on stderr): its code says so
        try:
            return self._process.wait()
        except BaseException:  # interrupted: as subprocess.run did, pyinfra does not outlive it
            self._process.kill()
            self._process.wait()
            raise

    def abandon(self) -> None:
        """Ended before it runs (nothing of it to undo); nothing once it ran."""
        if self._gate is None:
            return
        os.close(self._gate)
        self._gate = None
        self._process.kill()
        self._process.wait()


_AHEAD: list[GatedDeploy] = []


def start_ahead(repo: Path) -> None:
    """One started now, for the deploy this command is about to run (``take``); ended at exit
    if it never ran (the command stopped first)."""
    deploy = GatedDeploy(repo)
    _AHEAD.append(deploy)
    atexit.register(deploy.abandon)


def take(repo: Path) -> GatedDeploy:
    """The one started ahead (once), else a new one."""
    return _AHEAD.pop() if _AHEAD else GatedDeploy(repo)
