"""One image from the deploying machine's engine to a host's over SSH (``docker save`` here into
``docker load`` there), for a host that reaches no registry yet: the image registry's own, which
its host needs before the registry can answer (shipyard.apply.image_delivery)."""

from __future__ import annotations

import subprocess

from shipyard import commands
from shipyard.errors import ShipyardError
from shipyard.settings import HostSettings

SHIP_TIMEOUT_S = 1800  # one image over a slow link


def local_id(ref: str) -> str | None:
    done = subprocess.run(commands.docker_image_id(ref), capture_output=True, text=True, timeout=60, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def remote_id(host: HostSettings, ref: str) -> str | None:
    done = subprocess.run(commands.ssh(host, commands.docker_image_id(ref)), capture_output=True, text=True,
                          timeout=60, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def ship(host: HostSettings, ref: str) -> bool:
    """``ref`` from this machine's engine to ``host``'s, unless it holds that very image: whether
    it was sent. A host that is the deploying machine (``@local``) shares its engine."""
    if host.connect == "@local":
        return False
    have = local_id(ref)
    if have is None:
        raise ShipyardError(f"image {ref}", "not on the deploying machine's engine", "build it first (make deploy does)")
    if remote_id(host, ref) == have:
        return False
    save = subprocess.Popen(commands.docker_save([ref]), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    load = subprocess.run(commands.ssh(host, commands.docker_load()), stdin=save.stdout, capture_output=True,
                          timeout=SHIP_TIMEOUT_S, check=False)
    save.stdout.close()
    saved = save.wait(timeout=60)
    if saved != 0 or load.returncode != 0:
        error = (save.stderr.read() if saved else load.stderr).decode(errors="replace").strip()
        raise ShipyardError(f"host {host.name}, image {ref}", f"not shipped over SSH: {error[-500:]}",
                            "check the host's disk and engine (make status) and deploy again")
    if remote_id(host, ref) != have:
        raise ShipyardError(f"host {host.name}, image {ref}", "shipped, but the host's engine holds another image",
                            "deploy again")
    return True
