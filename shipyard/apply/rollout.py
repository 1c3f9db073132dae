"""pyinfra operations that ship one host's rendered project and secrets, then converge it."""

from __future__ import annotations

from pyinfra.operations import python

from shipyard import commands, images
from shipyard.apply.converge import converge_host
from shipyard.apply.private_files import WantedPath, project_paths
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


def project_files(root: str, rendered: RenderedHost) -> list[WantedPath]:
    """The rendered project: directories 0755 and files 0644, owned by root."""
    wanted = [WantedPath(root, 0, "755")]
    for rel in sorted({p.rsplit("/", 1)[0] for p in rendered.files if "/" in p}):
        wanted.append(WantedPath(f"{root}/{rel}", 0, "755"))
    wanted += [WantedPath(f"{root}/{rel}", 0, "644", content) for rel, content in sorted(rendered.files.items())]
    return wanted


def secret_files(root: str, on_host: tuple[Component, ...], values: dict[str, Secret]) -> list[WantedPath]:
    """Each service gets its own copy of what it needs: mode 0400, owned by the uid that reads it,
    in a 0500 directory of that uid, under a 0700 root-only secrets directory."""
    wanted = [WantedPath(f"{root}/secrets", 0, "700")]
    for spec in on_host:
        if not spec.secrets:
            continue
        folder = f"{root}/secrets/{spec.name}"
        wanted.append(WantedPath(folder, spec.uid, "500"))
        wanted += [WantedPath(f"{folder}/{s.target}", spec.uid, "400", _secret_bytes(s, values)) for s in spec.secrets]
    return wanted


def roll_out(settings: EnvironmentSettings, rendered: RenderedHost, values: dict[str, Secret]) -> None:
    root = commands.project_dir(settings.deploy_root, settings.name)
    on_host = components_on(settings, rendered.host)
    project_paths(name=f"project files and secrets in {root}", root=root,
                  wanted=project_files(root, rendered) + secret_files(root, on_host, values))
    services = {}
    for spec in on_host:
        ref = images.service_image(spec.name, settings.images.source, settings.images.mirror, settings.app.version)
        replicas = settings.app.worker_replicas if spec.name == "worker" else 1
        services[spec.name] = (replicas, ref)
    timeouts = {"data": settings.health.data_timeout_s, "app": settings.health.app_timeout_s,
                "edge": settings.health.edge_timeout_s}
    python.call(name=f"converge {settings.compose_project} tier by tier", function=converge_host,
                project_dir=root, project=settings.compose_project, services=services, timeouts=timeouts)
