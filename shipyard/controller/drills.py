"""What the components' drills share (promote, rebuild, backups, failover): the host of a
service, its container, a command in it as an argv, stop and start, and a throwaway container
with a stopped service's volumes — every change through ``HostControl``. No docker CLI, no
shell strings."""

from __future__ import annotations

from docker.models.containers import Container

from shipyard import topology
from shipyard.errors import ShipyardError
from shipyard.controller.hosts import HostControl
from shipyard.settings import EnvironmentSettings

# Drills wait inside some commands (a base backup, pg_ctl promote -w): a long request timeout.
DRILL_TIMEOUT_S = 600


def require_local(settings: EnvironmentSettings) -> None:
    """For the drills tried on @local hosts only: PostgreSQL's (its nodes share one host). Redis's
    failover and `make token` run over SSH too (tests/multihost: `multi`'s Redis fails over from
    h2 to h3), through the same docker SDK tunnel as releases."""
    if any(host.connect != "@local" for host in settings.hosts):
        raise ShipyardError(f"environment {settings.name}", "drills run on environments of @local hosts only",
                            "run the drill on the data host itself, with an inventory of @local hosts")


def access(settings: EnvironmentSettings, service: str) -> HostControl:
    """The host that runs ``service``."""
    try:
        host = topology.build(settings).find(service).host
    except KeyError:
        raise ShipyardError(f"environment {settings.name}", f"has no service {service}",
                            "name one of: " + ", ".join(sorted({i.name for i in topology.build(settings).instances}))) from None
    return HostControl(settings, host, timeout_s=DRILL_TIMEOUT_S)


def container(settings: EnvironmentSettings, service: str, running: bool = True) -> Container:
    return access(settings, service).container_of(service, running=running)


def container_of(settings: EnvironmentSettings, service: str, running: bool = True) -> str:
    """The container id of ``service`` (also a stopped one when ``running`` is False)."""
    return container(settings, service, running).id


def run_in(settings: EnvironmentSettings, service: str, argv: list[str], user: str = "") -> tuple[int, str, str]:
    """``argv`` in the running container of ``service``: (exit code, stdout, stderr)."""
    return access(settings, service).run(container(settings, service), argv, user=user)


def stop(settings: EnvironmentSettings, service: str) -> None:
    access(settings, service).stop(container(settings, service, running=False))


def start(settings: EnvironmentSettings, service: str) -> None:
    access(settings, service).start(container(settings, service, running=False))


def in_volumes_of(settings: EnvironmentSettings, service: str, argv: list[str], user: str = "",
                  environment: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``argv`` in a throwaway container of the service's image with its volumes (and config
    mounts), while the service itself is stopped: (exit code, stdout, stderr)."""
    stopped = container(settings, service, running=False)
    return access(settings, service).run_beside(stopped, argv, user=user, environment=environment,
                                                timeout_s=DRILL_TIMEOUT_S)
