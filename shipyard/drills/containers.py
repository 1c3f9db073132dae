"""The docker CLI calls the drills share: find a service's container, run a command."""

from __future__ import annotations

import subprocess

from shipyard import commands
from shipyard.errors import ShipyardError
from shipyard.settings import EnvironmentSettings


def run(argv: list[str], timeout: float = 30) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout).stdout.strip()


def compose_argv(settings: EnvironmentSettings, *args: str) -> list[str]:
    return commands.compose(commands.project_dir(settings.deploy_root, settings.name), settings.compose_project, *args)


def require_local(settings: EnvironmentSettings) -> None:
    # The drills drive the docker CLI of this machine; an SSH host's engine is elsewhere.
    if any(host.connect != "@local" for host in settings.hosts):
        raise ShipyardError(f"environment {settings.name}", "drills run on environments of @local hosts only",
                            "run the drill on the data host itself, with an inventory of @local hosts")


def container_of(settings: EnvironmentSettings, service: str, running: bool = True) -> str:
    """The container id of ``service`` (also a stopped one when ``running`` is False)."""
    require_local(settings)
    container = run(compose_argv(settings, "ps", "-q", *([] if running else ["-a"]), service))
    if not container:
        raise ShipyardError(f"environment {settings.name}, service {service}", "no running container",
                            f"roll the environment out first: make up ENV={settings.name}")
    return container
