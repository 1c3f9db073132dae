"""Runtime config: a validated model, and config sources that hot-reload it.

A ``ConfigSource`` holds the current config and swaps it atomically when a new valid one
arrives; an invalid one is rejected (logged and counted) and the old one stays. The file
source polls a path (the deploy replaces the file by rename, so inotify on the inode would
miss it); a Consul KV source will implement the same interface with blocking queries.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from taskplatform import kinds

# A timeout is a bound on one attempt; a day is far beyond any kind we run, and catches a unit
# mistake (milliseconds given as seconds) before it makes hung attempts last for ever.
TimeoutSeconds = Annotated[float, Field(gt=0, le=86_400)]

log = logging.getLogger("taskplatform.config")


class RuntimeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1, max_length=64)
    rate_limit_per_minute: int = Field(gt=0)
    worker_concurrency: int = Field(ge=1, le=256)
    task_max_attempts: int = Field(ge=1, le=100)
    retry_base_seconds: float = Field(gt=0)
    retry_max_seconds: float = Field(gt=0)
    reconcile_after_seconds: float = Field(gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"]
    # Optional (with defaults), so configs written before they existed stay valid. An attempt
    # running longer is cancelled and counted as a failure: a hung task cannot hold its slot
    # (and its lease) for ever.
    task_timeout_seconds: TimeoutSeconds = 300.0
    task_timeout_seconds_by_kind: dict[str, TimeoutSeconds] = Field(default_factory=dict)

    @field_validator("task_timeout_seconds_by_kind")
    @classmethod
    def _known_kinds(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(kinds.PAYLOADS))
        if unknown:  # a typo would silently fall back to the default timeout
            raise ValueError(f"unknown task kinds {unknown}; known: {sorted(kinds.PAYLOADS)}")
        return value

    def timeout_for(self, kind: str) -> float:
        return self.task_timeout_seconds_by_kind.get(kind, self.task_timeout_seconds)


@dataclass(frozen=True)
class LoadedConfig:
    config: RuntimeConfig
    hash: str  # sha256 of the raw document, so the deploy side can prove what was applied


class ConfigRejected(ValueError):
    pass


def parse_config(raw: bytes) -> LoadedConfig:
    try:
        doc = json.loads(raw)
        config = RuntimeConfig.model_validate(doc)
    except json.JSONDecodeError as exc:
        raise ConfigRejected(f"not valid JSON: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors())
        raise ConfigRejected(problems) from None
    return LoadedConfig(config, hashlib.sha256(raw).hexdigest()[:16])


class ConfigSource(abc.ABC):
    """Current runtime config + a watch loop. Listeners run after each applied reload."""

    def __init__(self) -> None:
        self._current: LoadedConfig | None = None
        self._listeners: list[Callable[[LoadedConfig], None]] = []
        self.on_reload: Callable[[], None] = lambda: None
        self.on_reject: Callable[[], None] = lambda: None

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def current(self) -> LoadedConfig:
        if self._current is None:
            raise RuntimeError("runtime config not loaded")
        return self._current

    @property
    def config(self) -> RuntimeConfig:
        return self.current().config

    def subscribe(self, listener: Callable[[LoadedConfig], None]) -> None:
        self._listeners.append(listener)

    def offer(self, raw: bytes, origin: str) -> bool:
        """Validate ``raw`` and swap it in; on rejection keep the old config. True if applied."""
        try:
            new = parse_config(raw)
        except ConfigRejected as exc:
            self.on_reject()
            log.error("runtime config rejected; keeping the current one", extra={
                "origin": origin, "reason": str(exc),
                "kept_version": self._current.config.version if self._current else None})
            return False
        if self._current is not None and new.hash == self._current.hash:
            return False
        first = self._current is None
        self._current = new  # one reference swap: readers see the old or the new, never a mix
        if not first:
            self.on_reload()
        log.info("runtime config applied", extra={"origin": origin, "version": new.config.version,
                                                   "hash": new.hash})
        for listener in self._listeners:
            listener(new)
        return True

    @abc.abstractmethod
    def load_initial(self) -> None:
        """Load synchronously at start; raise if nothing valid is available."""

    @abc.abstractmethod
    async def watch(self) -> None:
        """Run forever, offering each new version."""


class FileConfigSource(ConfigSource):
    def __init__(self, path: str | Path, poll_seconds: float = 1.0):
        super().__init__()
        self.path = Path(path)
        self.poll_seconds = poll_seconds
        self._last_raw: bytes | None = None

    def _read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            log.warning("runtime config file unreadable", extra={"path": str(self.path), "reason": exc.strerror})
            return None

    def load_initial(self) -> None:
        raw = self._read()
        if raw is None or not self.offer(raw, str(self.path)):
            raise RuntimeError(f"no valid runtime config at {self.path}")
        self._last_raw = raw

    def poll_once(self) -> None:
        raw = self._read()
        if raw is not None and raw != self._last_raw:
            self._last_raw = raw  # a rejected version is reported once, not every poll
            self.offer(raw, str(self.path))

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            self.poll_once()
