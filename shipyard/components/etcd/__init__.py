"""etcd: the DCS of PostgreSQL under Patroni (docs/data-tier.md). One member when the environment has fewer than three control
hosts, three (one per host, spread) from three control hosts on: a quorum that survives the loss
of one.

Its data is in a named volume per member. Authentication is on from the first rollout: the
deploying machine (``live_setup``, before any PostgreSQL node starts) makes etcd's ``root`` user
with a password only it holds (``etcd_root_password``, age-encrypted under ``secrets/<env>/``,
never delivered to a host), and Patroni's user whose one role may touch its cluster's key
prefix and nothing else (shipyard/components/postgres/etcd_access.py); then an anonymous
client may do nothing. The client port is published for the deploying machine on loopback (on
the host's private address only when a Patroni node on another host needs it); the peer port
only between hosts. No TLS yet: passwords travel in clear on the project network.

It names ``postgres`` because that is what it serves: Patroni's access is its live setup.

Images: ``local`` builds Debian bookworm's etcd-server 3.4.23; ``official`` names upstream's
image of the same version (rendered and unit-tested; not run here: no registry answers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shipyard.component import Component, ConfigDir, Health, Image, LiveSetup, PeerPort, Port, Service

UID = 998  # the local image's etcd user
CONF = "/etc/shipyard/etcd"
CLIENT_PORT = 2379
PUBLISHED_CLIENT_PORT = 2381
PEER_PORT = 2380
ROOT_PASSWORD = "etcd_root_password"  # held by the deploying machine only


def members(settings) -> int:
    """1, or 3 once there are three control hosts to spread them over (one member per host)."""
    return 3 if len(settings.hosts_with_role("control")) >= 3 else 1


def compose_service(ctx, inst) -> dict[str, Any]:
    peers = ctx.peer_endpoints("etcd", "etcd", PEER_PORT)
    names = ctx.instance_names("etcd", "etcd")
    advertised_peer = f"http://{ctx.peer_advertised(inst) or inst.name}:{PEER_PORT}"
    client = ctx.announced(inst)
    return {
        "command": [f"--name={inst.name}", "--data-dir=/var/lib/etcd/data",
                    f"--listen-client-urls=http://0.0.0.0:{CLIENT_PORT}",
                    f"--advertise-client-urls=http://{client}",
                    f"--listen-peer-urls=http://0.0.0.0:{PEER_PORT}",
                    f"--initial-advertise-peer-urls={advertised_peer}",
                    "--initial-cluster=" + ",".join(f"{n}=http://{e}" for n, e in zip(names, peers)),
                    "--initial-cluster-state=new", f"--initial-cluster-token=shipyard-{ctx.env}",
                    # Patroni rewrites its member keys every loop: keep an hour of history, no more.
                    "--auto-compaction-mode=periodic", "--auto-compaction-retention=1h",
                    "--quota-backend-bytes=268435456"],
        "user": f"{UID}:{UID}",
        "volumes": [f"etcd-data-{inst.number}:/var/lib/etcd"],
        "mem_limit": "256m",
    }


def _live_setup(ctx) -> list[str]:
    from shipyard.components.etcd.setup import run  # HTTP clients and the secret store: at run time only

    return run(ctx)


def _ahead(settings) -> None:
    from shipyard.components.etcd import setup  # noqa: F401


def _before(settings) -> tuple[tuple[str, str], ...]:
    # Every PostgreSQL node: Patroni logs in to etcd at its first start.
    return ("postgres", "postgres"), ("postgres", "postgres-replica")


def _checks():
    from shipyard.components.etcd import checks  # pytest and HTTP clients: loaded by `make verify` only

    return checks


COMPONENT = Component(
    name="etcd",
    folder=Path(__file__).parent,
    images=(Image("etcd", official="quay.io/coreos/etcd:v3.4.23", local="shipyard/etcd:3.4",
                  local_context="shipyard/components/etcd/image"),),
    config_dirs=(ConfigDir("etcd", CONF),),
    services=(
        # Healthy = it answers and its cluster has a leader (files/etcd/health.sh). Rolled out
        # with the data tier it serves (on the control hosts): the PostgreSQL nodes need it first.
        Service("etcd", "data", "control", "etcd", UID, config_dir="etcd",
                # Published for the deploying machine (member N at this + N - 1), clear of the
                # peer port 2380 that members on other hosts publish at its own number.
                port=Port(CLIENT_PORT, "etcd_client", PUBLISHED_CLIENT_PORT,
                          "first host port of etcd's client API (member N: this + N - 1)",
                          instance_offset=-1),
                peer_ports=(PeerPort(PEER_PORT, ("tcp",), "raft between the members"),),
                health=Health(("sh", f"{CONF}/health.sh"), start_period_s=30),
                instances=members, placement="spread"),
    ),
    compose_service=compose_service,
    held_secrets=(ROOT_PASSWORD,),
    live_setup=LiveSetup(_live_setup, before=_before, ahead=_ahead),
    checks=_checks,
)
