"""Consul: ``consul.servers`` servers holding the environment's runtime configuration in KV.

ACLs are on with default deny from the first start: the management token is pre-set in the
servers' config (``acl.tokens.master`` / ``initial_management``) from the stored secret, so
the cluster bootstraps its ACL system by itself, once, and a re-deploy never bootstraps again
nor replaces the token (a changed value would add a second management token, never revoke
one: Consul keeps what it has). The gossip key and the token reach the servers only in a
secret config file (``-config-file /run/secrets/...``), never in compose, env or a command line.
The servers' agent token (``consul_agent_token``, for their own catalog entries) is a token of
its own with write on the servers' nodes only, made once by the ``consul-agent-token`` job with
the management token; the servers name it in their config from the first start. The same job
makes Prometheus's token (``consul_metrics_token``: agent:read, nothing else), with which it
scrapes each server's ``/v1/agent/metrics?format=prometheus`` (``telemetry`` in server.hcl).

Images: ``local`` builds Debian bullseye's consul 1.8.7; ``official`` is hashicorp/consul.
Config keys that differ between the two are chosen by the version (see ``template_context``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shipyard.component import Component, ConfigDir, Health, Image, Metrics, PeerPort, Port, SecretFile, Service, Wait
from shipyard.components.consul.commands import COMMANDS
from shipyard.components.consul.settings import ConsulSettings

UID = 100  # the official image's consul user (gid 1000); the local image is built to match
CONF = "/etc/shipyard/consul"
SECRETS = "/run/secrets"
LOCAL_VERSION = "1.8.7"
OFFICIAL_VERSION = "1.20.2"

_GOSSIP = SecretFile("gossip.json", "consul_gossip_key", template="secrets/gossip.json.j2")
_ACL = SecretFile("acl-tokens.json", "consul_management_token", template="secrets/acl-tokens.json.j2")
_AGENT = SecretFile("agent-token.json", "consul_agent_token", template="secrets/agent-token.json.j2")
# The raw token for the operator's and the checks' CLI/API calls inside the container.
_TOKEN = SecretFile("management_token", "consul_management_token")
# What Prometheus presents to read the servers' own metrics (agent:read only), made by the
# consul-agent-token job like the agent token.
METRICS_TOKEN = "consul_metrics_token"


def version(ctx) -> tuple[int, ...]:
    text = LOCAL_VERSION if ctx.settings.images.source == "local" else OFFICIAL_VERSION
    return tuple(int(part) for part in text.split("."))


SERVER_RPC = 8300  # raft and the servers' RPC
SERF_LAN = 8301  # gossip: membership and failure detection (TCP and UDP)


def compose_service(ctx, inst) -> dict[str, Any]:
    if inst.service.name == "consul-agent-token":
        server = ctx.instances_of("consul", "consul")[0]  # placed with it: the group's first host
        return {"command": ["sh", f"{CONF}/agent-token.sh"], "user": f"{UID}:1000",
                "environment": {"CONSUL_HTTP_ADDR": f"http://{ctx.address(server)}"}}
    settings = ctx.section("consul")
    # Consul's own template: the container's address on the compose network.
    command = ["agent", "-server", f"-node={inst.name}", f"-config-file={CONF}/server.hcl",
               f"-config-file={SECRETS}/gossip.json", f"-config-file={SECRETS}/acl-tokens.json",
               f"-config-file={SECRETS}/agent-token.json", '-bind={{ GetInterfaceIP "eth0" }}']
    advertised = ctx.peer_advertised(inst)
    if advertised:
        # Servers on several hosts: the others reach this one at its host's address, where it
        # publishes the raft and gossip ports (shipyard.topology: peer ports).
        command.append(f"-advertise={advertised}")
    return {
        "command": command,
        "environment": {"CONSUL_SERVERS": str(settings.servers)},
        "volumes": [f"consul-data-{inst.number}:/consul/data"],
        "mem_limit": f"{settings.memory_limit_mb}m",
    }


def template_context(ctx) -> dict[str, Any]:
    v = version(ctx)
    return {"consul": ctx.section("consul"), "env": ctx.env,
            # Where each server's gossip is joined: its name on one host, its host's address on several.
            "join": [str(e) for e in ctx.peer_endpoints("consul", "consul", SERF_LAN)],
            # Renamed keys: ui → ui_config (1.9), acl.tokens.master → initial_management (1.11).
            "ui_config": v >= (1, 9), "management_key": "initial_management" if v >= (1, 11) else "master"}


def _checks():
    from shipyard.components.consul import checks  # pytest and HTTP clients: loaded by `make verify` only

    return checks


COMPONENT = Component(
    name="consul",
    folder=Path(__file__).parent,
    settings={"consul": ConsulSettings},
    images=(Image("consul", official=f"hashicorp/consul:{OFFICIAL_VERSION}", local="shipyard/consul:1.8",
                  local_context="shipyard/components/consul/image"),),
    config_dirs=(ConfigDir("consul", CONF),),
    services=(
        # Healthy = a leader is elected and every server is a raft peer (no token needed).
        Service("consul", "control", "control", "consul", UID, secrets=(_GOSSIP, _ACL, _AGENT, _TOKEN),
                config_dir="consul",
                port=Port(8500, "consul_http", 8500,
                          "first loopback port of the Consul servers' HTTP API (server N: this + N - 1)",
                          instance_offset=-1),
                peer_ports=(PeerPort(SERVER_RPC, ("tcp",), "server RPC and raft"),
                            PeerPort(SERF_LAN, ("tcp", "udp"), "LAN gossip")),
                health=Health(("sh", f"{CONF}/health.sh"), start_period_s=60),
                # Its own metrics (telemetry.prometheus_retention_time), behind the ACL: agent:read.
                metrics=Metrics(8500, "/v1/agent/metrics", params=(("format", "prometheus"),), bearer_secret=METRICS_TOKEN),
                # Raft knows its peers by address: when every server came back on a new one (a
                # cold start), no leader could be elected.
                instances=lambda s: s.consul.servers, placement="spread", fixed_address=True),
        Service("consul-agent-token", "control", "control", "consul", UID, one_shot=True, placement="once",
                serves_clients=False, config_dir="consul", waits=(Wait("consul"),),
                secrets=(_TOKEN, SecretFile("agent_token", "consul_agent_token"), SecretFile("metrics_token", METRICS_TOKEN))),
    ),
    compose_service=compose_service,
    template_context=template_context,
    secret_formats={"consul_management_token": "uuid", "consul_agent_token": "uuid", METRICS_TOKEN: "uuid",
                    "consul_gossip_key": "base64-32"},
    checks=_checks,
    commands=COMMANDS,
)
