"""One error hierarchy. Every error says where, what, and the fix."""

from __future__ import annotations


class ShipyardError(Exception):
    """An error a user can act on: ``where`` (file / key path / host / container), ``what``, ``fix``."""

    def __init__(self, where: str, what: str, fix: str) -> None:
        self.where, self.what, self.fix = where, what, fix
        super().__init__(f"{where}: {what}\n  fix: {fix}")


class SettingsError(ShipyardError):
    """Invalid inventory or settings: raised before any host is touched."""

    HEADING = "{} problem(s) in the environment settings; no host was touched:"

    def __init__(self, problems: list[ShipyardError]) -> None:
        self.problems = problems
        lines = [self.HEADING.format(len(problems))]
        lines += [f"- {p.where}: {p.what}\n    fix: {p.fix}" for p in problems]
        Exception.__init__(self, "\n".join(lines))
        self.where, self.what, self.fix = problems[0].where, problems[0].what, problems[0].fix


class UnreachableError(SettingsError):
    """Hosts a deploy cannot reach: raised before any host is touched."""

    HEADING = "{} host(s) not reachable; the deploy changed nothing on any host:"


class EngineDownError(SettingsError):
    """`make down` meets a host whose Docker engine does not answer: raised before any host's
    project goes down."""

    HEADING = "{} host(s) whose Docker engine does not answer; nothing was taken down:"


class BuilderError(SettingsError):
    """The deploying machine cannot build the environment's images (an image delivery on):
    raised before any host is touched."""

    HEADING = "{} problem(s) on the deploying machine, which builds the images; no host was touched:"


class SecretsError(ShipyardError):
    pass


class LockError(ShipyardError):
    pass


class RolloutError(ShipyardError):
    """A deploy that cannot go on with what it found on a host: raised while deploy.py plans
    the host's operations, so before anything on the host changes."""
