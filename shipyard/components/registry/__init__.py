"""The private image registry (docs/registry.md): with ``registry.enabled``, the images Shipyard
builds are built once, pushed here and pulled by the hosts that run them, instead of being built on
every host. Off by default: a single-host environment builds on its host.

One instance, on the inventory's ``registry`` host (one host), published on that host's own
address at ``ports.registry`` (publish "hosts": every host's engine pulls from it, and no service
of the topology consumes it). TLS with a certificate of the environment's own registry CA and
htpasswd (bcrypt) auth, both from the secret store (certificates.py); what a host's engine needs to
trust it and log in, and which images are pushed and pulled where, is client.py.

Images: ``local`` builds Debian bookworm's docker-registry (distribution 2.8.2); ``official`` is
``registry:2`` at 2.8.3. Its own image never comes from itself: its host builds or pulls it first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shipyard.component import Component, ConfigDir, Health, Image, Port, SecretFile, Service
from shipyard.components.registry import certificates, client
from shipyard.components.registry.settings import RegistrySettings
from shipyard.tls import is_ip_address

UID = 65534  # nobody: the local image's data directory is its
CONF = "/etc/docker/registry"
DATA = "/var/lib/registry"
SECRETS = "/run/secrets"
PORT = 5000
# /debug/health, for the probe only (module doc of the config), in the container: "localhost"
# (Go listens on its IPv4 address) says it is the container's own, not an address handed to it.
DEBUG_ADDR = "localhost:5001"
PROBE_URL = "http://127.0.0.1:5001/debug/health"
OFFICIAL_VERSION = "2.8.3"
HOST_GROUP = "registry"

CERT_FILE, KEY_FILE = f"{SECRETS}/registry.crt", f"{SECRETS}/registry.key"
HTPASSWD_FILE, HTTP_SECRET_FILE = f"{SECRETS}/htpasswd", f"{SECRETS}/registry.http-secret"


def enabled(settings) -> bool:
    return settings.registry.enabled


def compose_service(ctx, inst) -> dict[str, Any]:
    registry: RegistrySettings = ctx.section("registry")
    doc: dict[str, Any] = {
        "entrypoint": ["sh", f"{CONF}/start.sh"],
        "command": ["registry", "serve", f"{CONF}/config.yml"],
        "volumes": [f"registry-data:{DATA}"],
        # It writes only its storage; /tmp for what Go's HTTP server spools.
        "read_only": True, "tmpfs": ["/tmp"],
        "security_opt": ["no-new-privileges:true"], "cap_drop": ["ALL"],
        "mem_limit": f"{registry.memory_limit_mb}m",
    }
    if ctx.settings.images.source == "official":
        # registry:2's data directory is root's (its VOLUME): root, with no capability but reading
        # its secret files (owned by UID, mode 0400); docs only, not run here.
        doc |= {"user": "0:0", "cap_add": ["DAC_READ_SEARCH"]}
    else:
        doc["user"] = f"{UID}:{UID}"
    return doc


def template_context(ctx) -> dict[str, Any]:
    registry: RegistrySettings = ctx.section("registry")
    return {"env": ctx.env, "port": PORT, "data": DATA, "debug_addr": DEBUG_ADDR,
            "allow_delete": "true" if registry.allow_delete else "false",
            "upload_purge_age_h": registry.upload_purge_age_h,
            "cert_file": CERT_FILE, "key_file": KEY_FILE, "htpasswd_file": HTPASSWD_FILE,
            "http_secret_file": HTTP_SECRET_FILE,
            # secret templates (templates/secrets/), at deploy time only
            "cert_of": certificates.cert_of, "key_of": certificates.key_of,
            "htpasswd_file_of": certificates.htpasswd_file}


def settings_problems(settings) -> list[tuple[str, str, str]]:
    """Across sections: the registry binds its port on its host's address, which must be an IP."""
    if not settings.registry.enabled:
        return []
    found = []
    for host in settings.hosts_with_role(HOST_GROUP):
        if not is_ip_address(host.address):
            found.append(("registry.enabled", f"the registry's host {host.name} has the address {host.address!r}, "
                          f"and the registry publishes its port on it, which needs an IP address",
                          f"set 'address' of host {host.name} in the inventory to its private IP (the registry's "
                          f"DNS name belongs in registry.names)"))
    return found


_SECRET_FILES = (
    # Read at start (distribution reloads neither): a new value recreates the registry.
    SecretFile("registry.crt", certificates.TLS, template="secrets/registry-cert.pem.j2"),
    SecretFile("registry.key", certificates.TLS, template="secrets/registry-key.pem.j2"),
    SecretFile("htpasswd", certificates.PASSWORD, template="secrets/htpasswd.j2"),
    SecretFile("registry.http-secret", certificates.HTTP_SECRET),
)

def _checks():
    from shipyard.components.registry import checks  # pytest and HTTP clients: loaded by `make verify` only

    return checks


COMPONENT = Component(
    name="registry",
    folder=Path(__file__).parent,
    settings={"registry": RegistrySettings},
    images=(Image("registry", official=f"registry:{OFFICIAL_VERSION}", local="shipyard/registry:2.8",
                  local_context="shipyard/components/registry/image"),),
    config_dirs=(ConfigDir("registry", CONF),),
    services=(
        Service("registry", "control", HOST_GROUP, "registry", UID, config_dir="registry",
                port=Port(PORT, "registry", PORT, "port the image registry publishes on its host's address "
                                                  "(registry.enabled); every host's engine pulls from it",
                          publish="hosts"),
                serves_clients=False,
                health=Health(("wget", "-q", "-O", "/dev/null", PROBE_URL), start_period_s=10),
                secrets=_SECRET_FILES,
                placement="once", scale=lambda s: 1 if enabled(s) else 0),
    ),
    compose_service=compose_service,
    template_context=template_context,
    single_host=True,
    held_secrets=(certificates.CA_CERT, certificates.CA_KEY),
    issued_secrets={certificates.TLS: certificates.issue_bundle},
    settings_problems=settings_problems,
    # Every deploy: a certificate whose names, issuer or expiry no longer fit is re-issued first.
    preflight=certificates.preflight,
    checks=_checks,
    # Hosts that cannot build (no package mirror) get the images through it: client.DELIVERY.
    image_delivery=client.DELIVERY,
)
