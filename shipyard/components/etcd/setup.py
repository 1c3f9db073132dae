"""etcd's live setup (Component.live_setup), from the deploying machine within every rollout
that runs it, before any PostgreSQL node starts: the root user with the held password (made and
stored the first time), Patroni's user limited to its prefix, authentication on
(shipyard/components/postgres/etcd_access.py: idempotent)."""

from __future__ import annotations

from shipyard import secretstore, topology
from shipyard.component import CommandContext
from shipyard.components.etcd import ROOT_PASSWORD
from shipyard.components.postgres import etcd_access
from shipyard.errors import ShipyardError


def endpoint(settings) -> str:
    """The first member's client API as the deploying machine reaches it (its published port)."""
    topo = topology.build(settings)
    members = topo.instances_of("etcd", "etcd")
    if not members:
        raise ShipyardError(f"environment {settings.name}", "runs no etcd member",
                            "the etcd component runs on the control hosts: give the inventory one")
    bind, port = topo.binding(members[0])
    return f"http://{'127.0.0.1' if bind == '0.0.0.0' else bind}:{port}"


def root_password(ctx: CommandContext) -> str:
    held = secretstore.read_held(ctx.repo, ctx.settings.name, ROOT_PASSWORD)
    if held is not None:
        return held.value
    value = secretstore.new_value(ROOT_PASSWORD)
    secretstore.write_held(ctx.repo, ctx.settings.name, ROOT_PASSWORD, value)
    return value


def run(ctx: CommandContext) -> list[str]:
    url = endpoint(ctx.settings)
    try:
        etcd_access.grant_patroni(url, ctx.settings.name, root_password(ctx), ctx.secret("patroni_etcd_password"))
    except (etcd_access.EtcdAccessError, OSError) as exc:
        raise ShipyardError(f"etcd at {url}", f"Patroni's access could not be set up: {exc}",
                            f"check the members (make status ENV={ctx.settings.name}, "
                            f"make logs ENV={ctx.settings.name} SERVICE=etcd-1); a member that lost its data "
                            f"while the held root password stayed is set up again by the next rollout") from None
    return [f"etcd: authentication on, user {etcd_access.patroni.ETCD_USER} limited to "
            f"{etcd_access.patroni.key_prefix(ctx.settings.name)}"]
