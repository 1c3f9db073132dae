"""A rotated secret applied in running servers (make secrets-rotate, or the deploy after it).

The order that loses nothing, on every host one phase after the other:
1. the new files are in place, the old value beside them as ``<target>.retiring`` (rollout.py);
2. ``apply``: each running server that declares a shipyard.component.Rotation takes the new
   value live, keeping the old where it can (Redis accepts both passwords for a while);
3. the rollout recreates every container that reads the secret at start (their
   ``org.shipyard.secrets`` label changed), in tier order;
4. ``retire``: the servers drop the old value, and the retiring files go.

Runs inside pyinfra ``python.call``s; each step is idempotent, so a rotation interrupted
anywhere is finished by the next deploy. Nothing here prints or passes a value: the commands
read the files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from pyinfra import host
from pyinfra.api.exceptions import OperationError

from shipyard import commands
from shipyard.apply import remote

RETIRING_SUFFIX = ".retiring"


@dataclass(frozen=True)
class LiveRotation:
    """One command of one phase, in one service's running container (plain data for python.call)."""

    service: str
    secret: str
    argv: tuple[str, ...]


def _running(project_dir: str, project: str) -> set[str]:
    ok, output = remote.run(commands.compose_ps(project_dir, project))
    if not ok:
        raise OperationError(f"host {host.name}: `docker compose ps` in {project_dir} failed:\n{output.stderr}")
    rows = [json.loads(line) for line in output.stdout.splitlines() if line.strip().startswith("{")]
    return {row["Service"] for row in rows if row.get("State") == "running"}


def run_phase(project_dir: str, project: str, phase: str, steps: Sequence[LiveRotation]) -> None:
    """Run ``steps`` in their services' running containers; a container that is not running
    starts with the new files and needs nothing."""
    running = _running(project_dir, project)
    for step in steps:
        if step.service not in running:
            host.noop(f"{step.service} is not running: it starts with the new {step.secret}")
            continue
        argv = commands.compose(project_dir, project, "exec", "-T", step.service, *step.argv)
        ok, output = remote.run(argv)
        if not ok:
            # The scripts never print a value; what they say is the server's error.
            print(f"host {host.name}: {phase} of the rotated {step.secret} in container {step.service} failed:\n"
                  f"{(output.stderr or output.stdout).strip()}\n"
                  f"fix: correct the cause above and run the deploy again; it finishes the rotation "
                  f"(the old value stays valid until it has)", flush=True)
            raise OperationError(f"host {host.name}: {phase} of {step.secret} in {step.service} failed (report above)")
        print(f"[{host.name}] {step.secret}: {phase} in {step.service}", flush=True)


def retire(project_dir: str, project: str, steps: Sequence[LiveRotation]) -> None:
    """The last phase: servers drop the old value, then its files go."""
    run_phase(project_dir, project, "retire", steps)
    argv = ["find", f"{project_dir}/secrets", "-name", f"*{RETIRING_SUFFIX}", "-delete"]
    ok, output = remote.run(argv)
    if not ok:
        raise OperationError(f"host {host.name}: removing the retiring secret files failed:\n{output.stderr}")
