"""pyinfra operations that ship one host's rendered project and secrets, then converge it."""

from __future__ import annotations

import io

from pyinfra.operations import files, python

from shipyard import commands, images
from shipyard.apply.converge import converge_host
from shipyard.apply.private_files import private_directory, private_file
from shipyard.catalog import Component
from shipyard.render import RenderedHost
from shipyard.render.templates import render_template
from shipyard.secretstore import Secret
from shipyard.settings import EnvironmentSettings
from shipyard.topology import components_on


def _secret_bytes(secret_file, values: dict[str, Secret]) -> bytes:
    value = values[secret_file.secret].value
    if secret_file.template:
        return render_template(secret_file.template, {secret_file.secret: value}).encode()
    return value.encode()


def ship_project(settings: EnvironmentSettings, rendered: RenderedHost) -> str:
    root = commands.project_dir(settings.deploy_root, settings.name)
    files.directory(name=f"project directory {root}", path=root, mode="0755", present=True)
    for rel in sorted({p.rsplit("/", 1)[0] for p in rendered.files if "/" in p}):
        files.directory(name=f"config dir {rel}", path=f"{root}/{rel}", mode="0755", present=True)
    for rel, content in rendered.files.items():
        files.put(name=f"file {rel}", src=io.BytesIO(content), dest=f"{root}/{rel}", mode="0644")
    return root


def deliver_secrets(root: str, on_host: tuple[Component, ...], values: dict[str, Secret]) -> None:
    """Each service gets its own copy of what it needs: mode 0400, owned by the uid that reads it."""
    files.directory(name="secrets dir", path=f"{root}/secrets", mode="0700", present=True)
    for spec in on_host:
        if not spec.secrets:
            continue
        folder = f"{root}/secrets/{spec.name}"
        private_directory(name=f"secrets of {spec.name}", path=folder, uid=spec.uid, mode="500")
        for secret_file in spec.secrets:
            # The operation name carries no value; the content is compared by hash.
            private_file(name=f"secret {spec.name}/{secret_file.target}", content=_secret_bytes(secret_file, values),
                         dest=f"{folder}/{secret_file.target}", uid=spec.uid, mode="400")


def roll_out(settings: EnvironmentSettings, rendered: RenderedHost, values: dict[str, Secret]) -> None:
    root = ship_project(settings, rendered)
    on_host = components_on(settings, rendered.host)
    deliver_secrets(root, on_host, values)
    services = {}
    for spec in on_host:
        if spec.name in ("postgres", "redis", "edge"):
            ref = images.component_image("nginx" if spec.name == "edge" else spec.name,
                                         settings.images.source, settings.images.mirror)
        else:
            ref = images.app_image(settings.app.version)
        replicas = settings.app.worker_replicas if spec.name == "worker" else 1
        services[spec.name] = (replicas, ref)
    timeouts = {"data": settings.health.data_timeout_s, "app": settings.health.app_timeout_s,
                "edge": settings.health.edge_timeout_s}
    python.call(name=f"converge {settings.compose_project} tier by tier", function=converge_host,
                project_dir=root, project=settings.compose_project, services=services, timeouts=timeouts)
