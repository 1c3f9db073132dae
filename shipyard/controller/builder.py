"""The deploying machine as the environment's image builder (an image delivery on: the registry,
shipyard.apply.image_delivery): its own Docker engine must answer, with debootstrap for the
local image source, before any host is touched."""

from __future__ import annotations

import shutil
import subprocess

from shipyard import commands, image_plan, topology
from shipyard.errors import ShipyardError


def problems(settings) -> list[ShipyardError]:
    """What keeps the deploying machine from building the environment's images (empty: nothing)."""
    found = []
    where = "the deploying machine (it builds every image once: docs/registry.md)"
    if shutil.which("docker") is None:
        found.append(ShipyardError(where, "has no docker command", "install Docker here (apt-get install docker.io), "
                                   "or run `make up ENV=ci` once, which installs and starts it"))
    else:
        done = subprocess.run(commands.engine_version(), capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            found.append(ShipyardError(where, f"its Docker engine does not answer: {done.stderr.strip()[-300:]}",
                                       "start it (systemctl start docker, or dockerd without an init system); "
                                       "`make up ENV=ci` starts it too"))
    everywhere = [(i.component, i.service.image) for i in topology.build(settings).instances]
    if image_plan.needs_debootstrap(settings, everywhere) and shutil.which("debootstrap") is None:
        found.append(ShipyardError(where, "the local image source builds the Debian base with debootstrap, "
                                   "which is not installed here", "apt-get install debootstrap"))
    return found
