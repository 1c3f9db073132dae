"""Each process's applied runtime config, where the deploy can ask for it.

Every API process and every worker writes ``<TASKS_CONFIG_STATE_DIR>/<pid>.json`` — the version
and hash it applied with the switches it holds (maintenance, the enabled kinds), the newest one
it rejected (with why), whether its source is readable (and since when not) — when a config is
applied and every ``interval`` seconds. ``make
config-push`` reads the files of the processes still alive in each container (``/proc/<pid>``)
and waits until each one reports the pushed hash, or names the ones that do not and why.
A file, not an HTTP endpoint: the API's processes share one port, so a request reaches one of
them; files reach all, and need no port open to anyone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

from taskplatform.runtime_config import ConfigSource

log = logging.getLogger("taskplatform.config")


class ConfigReport:
    def __init__(self, source: ConfigSource, directory: str | Path, role: str, interval: float = 2.0):
        self.source, self.directory, self.role, self.interval = source, Path(directory), role, interval
        self.path = self.directory / f"{os.getpid()}.json"

    def state(self) -> dict:
        loaded = self.source.current() if self.source.loaded else None
        return {"pid": os.getpid(), "role": self.role, "at": time.time(),
                "version": loaded.config.version if loaded else None, "hash": loaded.hash if loaded else None,
                **(loaded.config.switches() if loaded else {}), **self.source.reload_state()}

    def write(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}")
            tmp.write_text(json.dumps(self.state()))
            os.replace(tmp, self.path)  # readers see the old report or the new one
        except OSError as exc:
            log.warning("config state report not written", extra={"path": str(self.path), "reason": exc.strerror})

    def start(self) -> asyncio.Task:
        """Report now, on each applied config, and every ``interval`` seconds."""
        self.source.subscribe(lambda _loaded: self.write())
        self.write()
        return asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.write()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
