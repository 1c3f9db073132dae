"""Taking a project down on the local engine (`make down`, bench-rollout's cold runs).

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

from shipyard import commands

_STALE = "has active endpoints"


def compose_down(project_dir: str, project: str, volumes: bool, echo: bool = True) -> int:
    """`docker compose down` of ``project`` (its output passed through, or only on failure when
    not ``echo``); 0 also when all that failed was removing a project network no container is
    attached to (said, with the fix)."""
    done = subprocess.run(commands.compose_down(project_dir, project, volumes), capture_output=True, text=True)
    if echo or done.returncode != 0:
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
    if done.returncode == 0 or _STALE not in done.stderr:
        return done.returncode
    left = _lines(commands.project_containers(project))
    if left is None or left:
        return done.returncode
    networks = _lines(commands.project_networks(project)) or []
    empty = [n for n in networks if _attached(n) == 0]
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


def _attached(network: str) -> int | None:
    done = subprocess.run(commands.docker_network_inspect(network), capture_output=True, text=True)
    if done.returncode != 0:
        return None
    return len(json.loads(done.stdout)[0].get("Containers") or {})
