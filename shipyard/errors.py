"""One error hierarchy. Every error says where, what, and the fix."""

from __future__ import annotations


class ShipyardError(Exception):
    """An error a user can act on: ``where`` (file / key path / host / container), ``what``, ``fix``."""

    def __init__(self, where: str, what: str, fix: str) -> None:
        self.where, self.what, self.fix = where, what, fix
        super().__init__(f"{where}: {what}\n  fix: {fix}")


class SettingsError(ShipyardError):
    """Invalid inventory or settings: raised before any host is touched."""

    def __init__(self, problems: list[ShipyardError]) -> None:
        self.problems = problems
        lines = [f"{len(problems)} problem(s) in the environment settings; no host was touched:"]
        lines += [f"- {p.where}: {p.what}\n    fix: {p.fix}" for p in problems]
        Exception.__init__(self, "\n".join(lines))
        self.where, self.what, self.fix = problems[0].where, problems[0].what, problems[0].fix


class SecretsError(ShipyardError):
    pass


class LockError(ShipyardError):
    pass


class RolloutError(ShipyardError):
    """A deploy that cannot go on with what it found on a host: raised while deploy.py plans
    the host's operations, so before anything on the host changes."""
