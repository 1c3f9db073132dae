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


def container_of(settings: EnvironmentSettings, service: str, running: bool = True) -> str:
    """The container id of ``service`` (also a stopped one when ``running`` is False)."""
    container = run(compose_argv(settings, "ps", "-q", *([] if running else ["-a"]), service))
    if not container:
        raise ShipyardError(f"environment {settings.name}, service {service}", "no running container",
                            f"roll the environment out first: make up ENV={settings.name}")
    return container
