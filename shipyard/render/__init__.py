"""settings + components → files: one compose project and its config dirs per host.

Pure and deterministic: the same settings give byte-identical files. Paths are relative to
the project directory (compose/<env>/<host>/ in the repo, <deploy_root>/<env>/ on the host).

- ``files``: compose.yaml and the rendered native configs — committed under compose/ and
  reviewed like a lock file;
- ``static``: the components' static scripts (their ``files/<config dir>/``), shipped into
  the same config dirs but not committed: they are in the repo already, and identical for
  every environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


from shipyard import topology, yamltext
from shipyard.component import Component
from shipyard.components import COMPONENTS
from shipyard.render.compose import hash_files, render_compose
from shipyard.render.context import RenderContext
from shipyard.render.templates import render_template, template_names
from shipyard.settings import EnvironmentSettings, HostSettings

COMPOSE_FILE = "compose.yaml"
HEADER = ("# Rendered by Shipyard (`make render`); do not edit. Secrets are files under ./secrets/,\n"
          "# delivered at deploy time and never rendered here. Static scripts of the components\n"
          "# (shipyard/components/<name>/files/) are shipped beside the config files.\n")


@dataclass(frozen=True)
class RenderedHost:
    host: HostSettings
    files: dict[str, bytes]  # relative path → content (committed under compose/)
    static: dict[str, bytes]  # relative path → content (shipped, not committed)
    compose: dict

    @property
    def shipped(self) -> dict[str, bytes]:
        """Everything the project dir on the host holds besides secrets."""
        return dict(sorted({**self.files, **self.static}.items()))


def _config_dirs_on(settings: EnvironmentSettings, host: HostSettings) -> list[tuple[Component, str]]:
    seen: list[tuple[Component, str]] = []
    for inst in topology.build(settings).instances_on(host):
        pair = (inst.component, inst.service.config_dir)
        if inst.service.config_dir and pair not in seen:
            seen.append(pair)  # type: ignore[arg-type]
    return seen


def static_files(comp: Component, config_dir: str) -> dict[str, bytes]:
    base = comp.files_dir / config_dir
    if not base.is_dir():
        return {}
    return {f"{config_dir}/{p.relative_to(base).as_posix()}": p.read_bytes()
            for p in sorted(base.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def render_config_dir(settings: EnvironmentSettings, host: HostSettings, comp: Component,
                      config_dir: str) -> dict[str, bytes]:
    ctx = RenderContext(settings, host, comp)
    variables = comp.template_context(ctx) if comp.template_context else {}
    return {name.removesuffix(".j2"): render_template(comp.name, comp.templates_dir, name, variables).encode()
            for name in template_names(comp.templates_dir, config_dir)}


def render_secret_file(comp: Component, template: str, secret: str, value: str,
                       variables: dict[str, Any] | None = None) -> bytes:
    """A secret file in a native format (secrets/<x>.j2 of the component), from its value and
    the component's template variables (``secret_variables``)."""
    return render_template(comp.name, comp.templates_dir, template, {**(variables or {}), secret: value}).encode()


def secret_variables(settings: EnvironmentSettings, host: HostSettings) -> dict[str, dict[str, Any]]:
    """component name → the variables its secret templates see (its ``template_context``), for
    each component the host runs (another's context may ask for addresses this host never sees)."""
    here = {inst.component.name for inst in topology.build(settings).instances_on(host)}
    return {comp.name: comp.template_context(RenderContext(settings, host, comp)) if comp.template_context else {}
            for comp in COMPONENTS if comp.name in here}


def render_host(settings: EnvironmentSettings, host: HostSettings) -> RenderedHost:
    files: dict[str, bytes] = {}
    static: dict[str, bytes] = {}
    hashes: dict[str, str] = {}
    for comp, config_dir in _config_dirs_on(settings, host):
        rendered = render_config_dir(settings, host, comp, config_dir)
        shipped = static_files(comp, config_dir)
        clash = sorted(set(rendered) & set(shipped))
        if clash:
            raise ValueError(f"component {comp.name}: {', '.join(clash)} is both a template and a static file")
        files.update(rendered)
        static.update(shipped)
        counted = {**rendered, **shipped}
        if comp.config_hash_part:
            counted = {path: comp.config_hash_part(settings, path, content) for path, content in counted.items()}
        hashes[config_dir] = hash_files(counted)
    compose = render_compose(settings, host, hashes)
    text = HEADER + yamltext.dump(compose)
    files[COMPOSE_FILE] = text.encode()
    return RenderedHost(host=host, files=dict(sorted(files.items())), static=dict(sorted(static.items())),
                        compose=compose)


def render_environment(settings: EnvironmentSettings) -> dict[str, RenderedHost]:
    """host name → rendered files, for every host of the environment."""
    return {host.name: render_host(settings, host) for host in settings.hosts}
