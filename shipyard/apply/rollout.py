"""pyinfra operations that ship one host's rendered project and secrets, then converge it in
the environment's rollout steps (shipyard.topology.rollout_steps): a step finishes on every
host before the next begins, so tiers converge in order across hosts."""

from __future__ import annotations

from pyinfra.operations import python

from shipyard import commands, images, topology
from shipyard.apply.converge import ServiceState, converge_host
from shipyard.apply.guard import FINGERPRINTS
from shipyard.apply.private_files import WantedPath, project_paths
from shipyard.render import RenderedHost, render_secret_file
from shipyard.secretstore import Secret, fingerprints_text
from shipyard.settings import EnvironmentSettings


def project_files(root: str, rendered: RenderedHost) -> list[WantedPath]:
    """The rendered project and the static files: directories 0755 and files 0644, owned by root."""
    shipped = rendered.shipped
    wanted = [WantedPath(root, 0, "755")]
    dirs = set()
    for path in shipped:
        parts = path.split("/")[:-1]
        dirs |= {"/".join(parts[:i]) for i in range(1, len(parts) + 1)}
    wanted += [WantedPath(f"{root}/{rel}", 0, "755") for rel in sorted(dirs)]
    wanted += [WantedPath(f"{root}/{rel}", 0, "644", content) for rel, content in shipped.items()]
    return wanted


def secret_files(root: str, on_host: tuple[topology.Instance, ...], values: dict[str, Secret]) -> list[WantedPath]:
    """Each service gets its own copy of what it needs: mode 0400, owned by the uid that reads it,
    in a 0500 directory of that uid, under a 0700 root-only secrets directory."""
    # What this host runs with, by fingerprint: a deploy holding other secrets stops (guard.py).
    wanted = [WantedPath(f"{root}/secrets", 0, "700"),
              WantedPath(f"{root}/secrets/{FINGERPRINTS}", 0, "400", fingerprints_text(values))]
    for inst in on_host:
        svc = inst.service
        if not svc.secrets:
            continue
        folder = f"{root}/secrets/{inst.name}"
        wanted.append(WantedPath(folder, svc.uid, "500"))
        for s in svc.secrets:
            value = values[s.secret].value
            content = render_secret_file(inst.component, s.template, s.secret, value) if s.template else value.encode()
            wanted.append(WantedPath(f"{folder}/{s.target}", svc.uid, "400", content))
    return wanted


def service_states(settings: EnvironmentSettings, rendered: RenderedHost) -> dict[str, ServiceState]:
    """What the converge step needs to know of each service on the host (plain data: it is
    handed to a pyinfra python.call)."""
    on_host = topology.instances_on(settings, rendered.host)
    names = {i.name for i in on_host}
    states = {}
    for inst in on_host:
        svc = inst.service
        same_host_deps = tuple(d.name for d in topology.dependencies(settings, inst) if d.name in names
                               and d.host.name == inst.host.name)
        states[inst.name] = ServiceState(
            name=inst.name, tier=svc.tier, replicas=svc.scale(settings) if svc.scale else 1,
            image=images.image_ref(settings, inst.component, svc.image), one_shot=svc.one_shot,
            reload_signal=svc.reload_signal, depends_on=same_host_deps)
    return states


def roll_out(settings: EnvironmentSettings, rendered: RenderedHost, values: dict[str, Secret]) -> None:
    root = commands.project_dir(settings.deploy_root, settings.name)
    on_host = topology.instances_on(settings, rendered.host)
    project_paths(name=f"project files and secrets in {root}", root=root,
                  wanted=project_files(root, rendered) + secret_files(root, on_host, values))
    states = service_states(settings, rendered)
    timeouts = {tier: getattr(settings.health, f"{tier}_timeout_s") for tier in {s.tier for s in states.values()}}
    steps = topology.rollout_steps(settings)
    for number, step in enumerate(steps, 1):
        mine = step.get(rendered.host.name, ())
        python.call(name=f"converge {settings.compose_project}, step {number} of {len(steps)}",
                    function=converge_host, project_dir=root, project=settings.compose_project,
                    services={name: states[name] for name in mine}, all_services=states, timeouts=timeouts)
