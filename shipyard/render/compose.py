"""Compose documents as data (dicts → YAML), one project per host.

Paths in the document are relative to the project directory, which is what lands on the
host at ``<deploy_root>/<env>/``: ``./<config dir>/`` (rendered + static files) and
``./secrets/<service>/<file>`` (delivered by the apply layer, never rendered).

Generic: every service is built from its component's spec (shipyard.component.Service) plus
the component's ``compose_service`` hook for what only it knows (command, environment,
volumes). No component is named here.
"""

from __future__ import annotations

import hashlib
from typing import Any

from shipyard import bluegreen, commands, image_plan, rollout_order, topology
from shipyard.component import Health
from shipyard.render.context import RenderContext
from shipyard.settings import EnvironmentSettings, HostSettings

CONFIG_HASH_LABEL = "org.shipyard.config-hash"
# The fingerprints of the secrets a service reads at start, from the project's .env (written by
# the deploy, never rendered): a changed secret recreates exactly the containers that read it.
SECRETS_LABEL = "org.shipyard.secrets"
SECRETS_DIR = "/run/secrets"
TIER_LABEL = "org.shipyard.tier"
COMPONENT_LABEL = "org.shipyard.component"
COLOUR_LABEL = "org.shipyard.colour"
VERSION_LABEL = "org.shipyard.version"

# The engine keeps each container's lines in json-file (what `make logs` reads); the labels
# named here ride in every line's "attrs", which is how the log shipper (shipyard/components/
# logs) knows the environment, service, colour and version of a line it reads from the file.
_LOGGING = {"driver": "json-file",
            "options": {"max-size": "10m", "max-file": "3",
                        "labels": ",".join(("com.docker.compose.project", "com.docker.compose.service",
                                            COMPONENT_LABEL, COLOUR_LABEL, VERSION_LABEL))}}

# Health probes: every second until the first success (a rollout's gates wait for that), then
# one every PROBE_SLOW_S: the probe sleeps before checking once it has passed. A probe costs a
# `docker exec` (~0.1 s of CPU in dockerd, containerd and runc), so an idle stack probing every
# second keeps a core busy. A failed probe drops the marker, so recovery is seen within a
# second again. The marker lives in /dev/shm, which a container restart empties.
PROBE_SLOW_S = 30
_PROBE = ('m=/dev/shm/.shipyard-healthy; [ ! -e "$m" ] || sleep {slow}; "$@"; rc=$?; '
          'if [ "$rc" = 0 ]; then : >"$m"; else rm -f "$m"; fi; exit "$rc"')


def healthcheck(health: Health) -> dict[str, Any]:
    # "$$": compose interpolates "$name" everywhere in the file; the shell must see "$".
    probe = _PROBE.format(slow=PROBE_SLOW_S).replace("$", "$$")
    return {"test": ["CMD", "sh", "-c", probe, "probe", *health.test],
            "interval": "1s", "timeout": f"{PROBE_SLOW_S + 15}s", "retries": health.retries,
            "start_period": f"{health.start_period_s}s"}


def _depends_on(settings: EnvironmentSettings, inst: topology.Instance, on_host: set[str]) -> dict[str, Any]:
    """Same-host start order; what runs on other hosts is ordered by the rollout steps."""
    deps: dict[str, Any] = {}
    for wait in inst.service.waits:
        for dep in topology.build(settings).instances_of(inst.component.name, wait.service):
            if dep.name in on_host:
                deps[dep.name] = {"condition": wait.condition}
    for used in inst.uses:
        for dep in topology.build(settings).instances_of(used):
            # A colour is started by a deploy or a release, never because a consumer starts.
            if dep.name in on_host and dep.service.serves_clients and dep.service.consumers_wait and dep.colour is None:
                deps[dep.name] = {"condition": dep.service.consumers_wait}
    return deps


def _service(settings: EnvironmentSettings, host: HostSettings, inst: topology.Instance, on_host: set[str],
             config_hashes: dict[str, str]) -> dict[str, Any]:
    svc, comp = inst.service, inst.component
    ctx = RenderContext(settings, host, comp)
    doc: dict[str, Any] = {"image": image_plan.versioned_ref(settings, comp, svc.image, inst.colour),
                           # A one-shot ran to completion: never started again by the engine.
                           "restart": "no" if svc.one_shot else "unless-stopped", "logging": _LOGGING}
    if comp.compose_service:
        doc.update(comp.compose_service(ctx, inst))
    health = svc.health_of(settings)
    if health:
        doc["healthcheck"] = healthcheck(health)
    labels = {COMPONENT_LABEL: comp.name, TIER_LABEL: svc.tier}
    if inst.colour:
        labels[COLOUR_LABEL] = inst.colour
    version = image_plan.version_of(settings, comp, svc.image, inst.colour)
    if version:
        labels[VERSION_LABEL] = version
    if svc.routing_mount:
        routing = f"{bluegreen.release_dir(settings.deploy_root, settings.name)}/{bluegreen.ROUTING_DIR}"
        doc.setdefault("volumes", []).append(f"{routing}:{svc.routing_mount}:ro")
    if svc.config_dir:
        doc.setdefault("volumes", []).append(f"./{svc.config_dir}:{comp.config_dir(svc.config_dir).mount}:ro")
        if not svc.hot_reload:
            # Compose does not see bind-mounted file contents; a label with their hash makes a
            # config change recreate the container. Hot-reloaded configs are left out on purpose.
            labels[CONFIG_HASH_LABEL] = config_hashes[svc.config_dir]
    if inst.secrets:
        # The service's own folder as a directory, not compose's per-file secrets: a file the
        # deploy replaces is then seen by the running container (a rotation's new and
        # retiring values, a passfile read at each connection).
        doc.setdefault("volumes", []).append(f"./secrets/{inst.name}:{svc.secrets_mount or SECRETS_DIR}:ro")
        if any(s.rotation is None for s in inst.secrets):
            labels[SECRETS_LABEL] = f"${{{secrets_variable(inst.name)}:-none}}"
    for setup in rollout_order.setups_waited_for(topology.build(settings), inst):
        if setup.live_setup.handoff:
            # Read-write: the service deletes the single-use credential it used.
            handoff = commands.handoff_dir(settings.deploy_root, settings.name, setup.name, inst.name)
            doc.setdefault("volumes", []).append(f"{handoff}:{setup.live_setup.handoff}")
    doc["labels"] = labels
    bound = topology.build(settings).binding(inst)
    ports = [f"{bound[0]}:{bound[1]}:{svc.port.container}"] if bound and svc.port else []
    ports += [f"{address}:{port}:{declared.container}"
              for address, port, declared in topology.build(settings).extra_bindings(inst)]
    ports += [f"{address}:{port}:{port}" + ("/udp" if protocol == "udp" else "")
              for address, port, protocol in topology.build(settings).peer_bindings(inst)]
    if ports:
        doc["ports"] = ports
    deps = _depends_on(settings, inst, on_host)
    if deps:
        doc["depends_on"] = deps
    scale = svc.scale(settings) if svc.scale else 1
    if scale != 1:
        doc["deploy"] = {"replicas": scale}
    return doc


def secrets_variable(instance: str) -> str:
    """The .env variable holding the fingerprint of what ``instance`` reads at start."""
    return "SHIPYARD_SECRETS_" + instance.upper().replace("-", "_")


def secrets_env(on_host: tuple[topology.Instance, ...], printed: dict[str, str]) -> bytes:
    """The project's .env: per instance, a fingerprint of the secrets it reads at start (those
    without a live Rotation), which its compose label interpolates — so a changed secret
    recreates exactly its readers. ``printed``: secret name → its fingerprint
    (shipyard.secretstore.fingerprints); no value is in it."""
    lines = []
    for inst in on_host:
        read_at_start = sorted({s.secret for s in inst.secrets if s.rotation is None})
        if read_at_start:
            joined = ",".join(f"{name}:{printed[name]}" for name in read_at_start)
            lines.append(f"{secrets_variable(inst.name)}={hashlib.sha256(joined.encode()).hexdigest()[:16]}\n")
    return "".join(lines).encode()


def render_compose(settings: EnvironmentSettings, host: HostSettings,
                   config_hashes: dict[str, str]) -> dict[str, Any]:
    """The compose document of ``host``. ``config_hashes``: config dir → content hash."""
    on_host = topology.build(settings).instances_on(host)
    names = {i.name for i in on_host}
    services = {inst.name: _service(settings, host, inst, names, config_hashes) for inst in on_host}
    fixed = [inst for inst in on_host if inst.service.fixed_address]
    for n, inst in enumerate(fixed):
        services[inst.name]["networks"] = {"default": {"ipv4_address": settings.network.fixed_address(n)}}
    document: dict[str, Any] = {"name": settings.compose_project, "services": services,
                                # Fixed addresses below .128, Docker's own from the upper half.
                                "networks": {"default": {"ipam": {"config": [
                                    {"subnet": str(settings.network.subnet),
                                     "ip_range": settings.network.dynamic_range}]}}}}
    volumes = {v.split(":", 1)[0]: {} for s in services.values() for v in s.get("volumes", [])
               if not v.startswith(("./", "/"))}
    if volumes:
        document["volumes"] = volumes
    return document


def hash_files(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + files[path] + b"\0")
    return digest.hexdigest()[:16]
