"""What a live setup hands the services that wait for it (Component.live_setup): files written
into each instance's own hand-off directory on its host, mounted read-write in its container.

Runs inside a pyinfra ``python.call``, after the setup and before the instances' step, on every
host: the content exists only then (Vault's wrapped secret-ids are issued at that moment). Never
printed; each file lands under a temporary name in the instance's 0700 directory, owned by the
service's uid, mode 0400, then renamed over the old one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pyinfra import host
from pyinfra.api.exceptions import OperationError

from shipyard import commands
from shipyard.apply import remote
from shipyard.component import CommandContext
from shipyard.errors import ShipyardError


def _run(argv: list[str]) -> None:
    ok, output = remote.run(argv)
    if not ok:
        raise OperationError(f"host {host.name}: `{commands.to_shell(argv)}` failed:\n{output.stderr or output.stdout}")


def hand_off(component: str, deliver: Callable[[CommandContext, tuple[str, ...]], Mapping[str, Mapping[str, bytes]]],
             context: CommandContext, targets: Mapping[str, tuple[str, int]]) -> None:
    """``targets``: instance → (its hand-off directory, the service's uid)."""
    try:
        files = deliver(context, tuple(targets))
    except ShipyardError as err:
        raise OperationError(f"{component}'s hand-off to {', '.join(targets)} stopped the rollout: {err}") from err
    for instance, (directory, uid) in targets.items():
        _run(["install", "-d", "-m", "700", "-o", str(uid), "-g", str(uid), directory])
        for name, content in files[instance].items():
            staged = f"{directory}/.{name}.new"
            remote.put_private(content, staged)
            _run(["chown", f"{uid}:{uid}", staged])
            _run(["chmod", "400", staged])
            _run(["mv", "-f", staged, f"{directory}/{name}"])
        print(f"[{host.name}] {component}: handed {instance} {', '.join(sorted(files[instance]))}", flush=True)
