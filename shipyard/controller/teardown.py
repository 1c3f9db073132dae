"""Taking a project down (`make down`, bench-rollout's cold runs): on the local engine, or on an
SSH host through the ssh client (``over``: argv → the argv that runs it there).

Docker 20.10 (Debian bookworm's docker.io) can keep counting an endpoint on a network after
every container on it is gone: `docker network rm` then says "has active endpoints" until the
engine restarts, and so does `compose down`, after it removed every container and volume. Seen
once here after the e2e suite's Patroni drills (a leader disconnected from the network and
connected again); the count lives in the engine, not in anything of ours. Such a network is
harmless (the next rollout reuses it) and nothing we could remove is left, so the teardown says
so and carries on rather than failing half done.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

from shipyard import bluegreen, commands
from shipyard.errors import ShipyardError
from shipyard.settings import EnvironmentSettings, HostSettings

Over = Callable[[list[str]], list[str]]


def _here(argv: list[str]) -> list[str]:
    return argv

_STALE = "has active endpoints"


def compose_down(project_dir: str, project: str, volumes: bool, echo: bool = True, over: Over = _here) -> int:
    """`docker compose down` of ``project`` (its output passed through, or only on failure when
    not ``echo``); 0 also when all that failed was removing a project network no container is
    attached to (said, with the fix)."""
    done = subprocess.run(over(commands.compose_down(project_dir, project, volumes)), capture_output=True, text=True)
    if echo or done.returncode != 0:
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
    if done.returncode == 0 or _STALE not in done.stderr:
        return done.returncode
    left = _lines(over(commands.project_containers(project)))
    if left is None or left:
        return done.returncode
    networks = _lines(over(commands.project_networks(project))) or []
    empty = [n for n in networks if _attached(n, over) == 0]
    if not networks or len(empty) != len(networks):
        return done.returncode
    for name in empty:
        print(f"{project}: network {name} left in place: the Docker engine still counts an endpoint on it "
              f"though no container is attached (an engine leak; the next rollout reuses the network). "
              f"fix, if it must go: restart the Docker engine, then `docker network rm {name}`", file=sys.stderr)
    return 0


def _lines(argv: list[str]) -> list[str] | None:
    done = subprocess.run(argv, capture_output=True, text=True)
    return done.stdout.split() if done.returncode == 0 else None


def _attached(network: str, over: Over = _here) -> int | None:
    done = subprocess.run(over(commands.docker_network_inspect(network)), capture_output=True, text=True)
    if done.returncode != 0:
        return None
    return len(json.loads(done.stdout)[0].get("Containers") or {})


def _over(host: HostSettings) -> Over:
    return _here if host.connect == "@local" else (lambda argv: commands.ssh(host, argv))


def _deployed(settings: EnvironmentSettings, host: HostSettings) -> bool:
    project_dir = commands.project_dir(settings.deploy_root, settings.name)
    return subprocess.run(_over(host)(["test", "-f", f"{project_dir}/compose.yaml"]), capture_output=True).returncode == 0


def engine_problems(settings: EnvironmentSettings, hosts: list[HostSettings]) -> list[ShipyardError]:
    """The hosts among ``hosts`` holding a deployed project whose Docker engine does not answer.
    `compose down` there fails on docker's raw "Cannot connect" after the hosts before it went
    down, and leaves the project (with its secrets' fingerprints) behind: so `make down` takes
    nothing down anywhere until every such engine answers."""
    found = []
    for host in hosts:
        if not _deployed(settings, host):
            continue
        done = subprocess.run(_over(host)(commands.engine_version()), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            said = (done.stderr.strip() or done.stdout.strip())[-300:]
            found.append(ShipyardError(
                f"{settings.name} on {host.name}", f"the Docker engine does not answer ({said})",
                "start it (systemctl start docker, or dockerd without an init system; `make up ENV="
                f"{settings.name}` starts it too), then run `make down ENV={settings.name}` again"))
    return found


def host_down(settings: EnvironmentSettings, host: HostSettings, volumes: bool) -> int:
    """The environment's project taken down on ``host`` (local or over SSH); with ``volumes``, its
    volumes, shipped project, release state and hand-offs too (the age-encrypted secrets in the
    checkout stay): the next deploy starts from nothing."""
    over = _over(host)
    where = f"{settings.name} on {host.name}"
    project_dir = commands.project_dir(settings.deploy_root, settings.name)
    if not _deployed(settings, host):
        print(f"{where}: nothing deployed at {project_dir}")
        return 0
    code = compose_down(project_dir, settings.compose_project, volumes, over=over)
    if code == 0 and volumes:
        # `compose down --volumes` removes the volumes its file names today: one a component that
        # is gone used (a component an inventory no longer runs) would hand its old data to the
        # next rollout that names it again (a Patroni cluster's state beside brand-new nodes).
        left = _lines(over(commands.project_volumes(settings.compose_project))) or []
        if left:
            code = subprocess.run(over(commands.volume_rm(left)), check=False).returncode
        # The shipped project and its secret files, the copy kept for restores, the release state
        # and history (without VOLUMES they stay: `make up` brings the live colour back at its
        # version) and what the live setups handed the services (Vault tokens of data now gone).
        code = code or subprocess.run(over(["rm", "-rf", project_dir, commands.last_good_dir(settings.deploy_root, settings.name),
                                            bluegreen.release_dir(settings.deploy_root, settings.name),
                                            commands.handoff_root(settings.deploy_root, settings.name)]),
                                      check=False).returncode
        if code == 0:
            print(f"{where}: removed {project_dir}")
    return code
