"""Secret sources. The API and workers ask a ``SecretSource`` by name and never care where the
value lives: files under /run/secrets here, Vault later (same interface)."""

from __future__ import annotations

import abc
from pathlib import Path


class SecretError(RuntimeError):
    pass


class SecretSource(abc.ABC):
    @abc.abstractmethod
    def get(self, name: str) -> str:
        """The secret's value; raises SecretError (without the value) when unavailable."""


def optional(source: SecretSource, name: str) -> str | None:
    """A secret the deployment may not provide (the Sentinels' password without Sentinels)."""
    try:
        return source.get(name)
    except SecretError:
        return None


class FileSecretSource(SecretSource):
    """One file per secret (mode 0400, delivered by the deploy), trailing newline stripped."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def get(self, name: str) -> str:
        path = self.directory / name
        try:
            value = path.read_text().rstrip("\n")
        except OSError as exc:
            raise SecretError(f"secret {name!r} is not readable at {path}: {exc.strerror}") from None
        if not value:
            raise SecretError(f"secret {name!r} at {path} is empty")
        return value
