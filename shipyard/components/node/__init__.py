"""Per-host agents: a node exporter on every host of the environment (whatever its roles), and
cAdvisor beside it under the ``official`` image source only.

The node exporter reads the host's /proc, /sys and root filesystem through read-only bind
mounts (``--path.procfs``, ``--path.sysfs``, ``--path.rootfs``) as nobody. It runs on the
project network, not the host's: nothing is published, Prometheus scrapes it there. So the
collectors that read the *network namespace* of the process (netdev, netstat, sockstat) would
describe the container, not the host, and are off; disk, memory, CPU, load and filesystems are
the host's. Images: Debian bookworm's prometheus-node-exporter 1.5.0 (``local``),
prom/node-exporter at the same version (``official``).

cAdvisor has no Debian package and no image any registry here serves: it is rendered for
``official`` only (``gcr.io/cadvisor/cadvisor``), never run or tested on these machines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shipyard.component import EVERY_HOST, Component, Image, Metrics, Service
from shipyard.components.node.settings import NodeSettings

NODE_EXPORTER_PORT = 9100
CADVISOR_PORT = 8080
UID = 65534  # nobody, as in the official node exporter image
NODE_EXPORTER_VERSION = "1.5.0"
CADVISOR_VERSION = "0.47.2"
HOST_ROOT = "/host/root"


def compose_service(ctx, inst) -> dict[str, Any]:
    if inst.service.name == "cadvisor":
        # cAdvisor's documented docker run: the host's filesystems and the engine's state, read-only.
        return {"volumes": ["/:/rootfs:ro", "/var/run:/var/run:ro", "/sys:/sys:ro",
                            "/var/lib/docker/:/var/lib/docker:ro", "/dev/disk/:/dev/disk:ro"],
                "devices": ["/dev/kmsg"], "privileged": True,
                "command": [f"--port={CADVISOR_PORT}", "--docker_only=true", "--housekeeping_interval=15s"],
                "mem_limit": "256m"}
    return {"command": [f"--web.listen-address=:{NODE_EXPORTER_PORT}", "--path.procfs=/host/proc",
                        "--path.sysfs=/host/sys", f"--path.rootfs={HOST_ROOT}", f"--path.udev.data={HOST_ROOT}/run/udev/data",
                        # The container's network namespace, not the host's (see the module doc).
                        "--no-collector.netdev", "--no-collector.netstat", "--no-collector.sockstat",
                        "--no-collector.textfile",
                        # Debian's build turns it on; there is no D-Bus in a container.
                        "--no-collector.systemd",
                        # Every container adds a veth on the host: ~20 series each, churning with
                        # every re-creation, about the engine's plumbing rather than the host.
                        "--collector.netclass.ignored-devices=^(veth.*|br-.*|docker[0-9]*)$"],
            "volumes": ["/proc:/host/proc:ro", "/sys:/host/sys:ro", f"/:{HOST_ROOT}:ro"],
            "mem_limit": "64m"}


COMPONENT = Component(
    name="node",
    folder=Path(__file__).parent,
    settings={"node": NodeSettings},
    images=(Image("node-exporter", official=f"prom/node-exporter:v{NODE_EXPORTER_VERSION}",
                  local="shipyard/node-exporter:1.5", local_context="shipyard/components/node/image"),
            # No local recipe: Debian has no cAdvisor (the service is never placed under 'local').
            Image("cadvisor", official=f"gcr.io/cadvisor/cadvisor:v{CADVISOR_VERSION}")),
    services=(
        Service("node-exporter", "observability", EVERY_HOST, "node-exporter", UID, serves_clients=False,
                metrics=Metrics(NODE_EXPORTER_PORT), scale=lambda s: 1 if s.node.exporter else 0),
        Service("cadvisor", "observability", EVERY_HOST, "cadvisor", 0, serves_clients=False,
                metrics=Metrics(CADVISOR_PORT),
                scale=lambda s: 1 if s.node.cadvisor and s.images.source == "official" else 0),
    ),
    compose_service=compose_service,
)
