"""Secret sources. The API and workers ask a ``SecretSource`` by name and never care where the
value lives: files under /run/secrets, or Vault's copies of them kept as files by the credential keeper
(``for_process``)."""

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


class FirstOf(SecretSource):
    """The first of ``sources`` that has the secret (Vault's copies kept as files, then the deploy's files)."""

    def __init__(self, *sources: SecretSource):
        self.sources = sources

    def get(self, name: str) -> str:
        problems = []
        for source in self.sources:
            try:
                return source.get(name)
            except SecretError as exc:
                problems.append(str(exc))
        raise SecretError("; ".join(problems))


def kept_dir(settings) -> Path | None:
    """Where the credential keeper keeps the service's KV copies (with Vault and a KV path)."""
    if settings.vault_enabled() and settings.vault_kv_path:
        return Path(settings.vault_state_dir) / "secrets"
    return None


def for_process(settings) -> SecretSource:
    """The files under ``secrets_dir``; with Vault and a KV path, the service's secrets as the
    credential keeper keeps them (``db_credentials``, under ``vault_state_dir``) first."""
    files = FileSecretSource(settings.secrets_dir)
    kept = kept_dir(settings)
    return FirstOf(FileSecretSource(kept), files) if kept else files


def file_of(settings, name: str) -> Path:
    """The file a secret is read from, for a reader that takes a path (read again at each use):
    the keeper's copy when there is one, else the delivered file."""
    kept = kept_dir(settings)
    if kept and (kept / name).exists():
        return kept / name
    return Path(settings.secrets_dir) / name


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
