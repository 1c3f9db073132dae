"""What the rest of a deploy needs of the registry, as data (pure: the apply layer runs it):

- ``trust_files``: the files a host's Docker engine needs to trust the registry's CA
  (``/etc/docker/certs.d/<name>:<port>/ca.crt``, which dockerd reads per registry, no restart);
- ``login_argv``: `docker login` as the registry's user, the password on stdin (never on argv);
- ``pushed_ref`` / ``push_argvs`` / ``pull_argvs``: an image Shipyard builds, under its name in
  the registry (``<name>:<port>/shipyard/<image>:<tag>``); a host pulls it and tags it with the
  name its compose file runs, so the render stays the same with or without a registry;
- ``distribution``: which images are built once and pushed, and which host pulls which (from the
  topology: the hosts that run a service on it).
"""

from __future__ import annotations

from dataclasses import dataclass

from shipyard import image_plan, topology
from shipyard.components.registry import HOST_GROUP, certificates

CERTS_DIR = "/etc/docker/certs.d"  # dockerd's per-registry trust (each <host>:<port>/ca.crt)
NAMESPACE = "shipyard"


def endpoint(settings) -> str:
    """``<first name>:<port>``: how every host's engine reaches the registry."""
    return f"{settings.registry.names[0]}:{settings.ports.registry}"


def trust_files(settings, ca_cert_pem: str) -> dict[str, bytes]:
    """path → content of the CA file an engine reads for each name of the registry (mode 0644: a
    CA certificate is public)."""
    return {f"{CERTS_DIR}/{name}:{settings.ports.registry}/ca.crt": ca_cert_pem.encode()
            for name in settings.registry.names}


def login_argv(settings) -> list[str]:
    """`docker login` as the registry's user; the apply layer writes the password
    (secret ``registry_password``) to its stdin."""
    return ["docker", "login", "--username", certificates.USER, "--password-stdin", endpoint(settings)]


def repository_ref(ref: str) -> str:
    """``shipyard/postgres:15`` → ``shipyard/postgres:15`` in the registry, whatever the address it
    is reached by; a ref outside the ``shipyard/`` namespace goes under it too."""
    return f"{NAMESPACE}/{image_plan.normalize_ref(ref.removeprefix(f'{NAMESPACE}/'))}"


def pushed_ref(settings, ref: str) -> str:
    """``shipyard/postgres:15`` → ``<name>:<port>/shipyard/postgres:15``: how the hosts pull it."""
    return f"{endpoint(settings)}/{repository_ref(ref)}"


def push_argvs(settings, ref: str) -> list[list[str]]:
    """On the building host: tag the built image with its registry name, push it."""
    return [["docker", "tag", ref, pushed_ref(settings, ref)], ["docker", "push", pushed_ref(settings, ref)]]


def pull_argvs(settings, ref: str) -> list[list[str]]:
    """On a host that runs it: pull it from the registry, tag it with the name compose runs."""
    return [["docker", "pull", pushed_ref(settings, ref)], ["docker", "tag", pushed_ref(settings, ref), ref]]


@dataclass(frozen=True)
class Distributed:
    """One image built once (on ``Distribution.builder``) and pulled by the hosts ``pulled_by``."""

    ref: str  # the name compose runs: shipyard/postgres:15
    pushed: str  # its name in the registry
    pulled_by: tuple[str, ...]  # host names


@dataclass(frozen=True)
class Distribution:
    """Where the environment's images come from with the registry on: ``builder`` (the registry's
    host) builds every image Shipyard builds and pushes it; each other host pulls what it runs.
    The registry's own image is never in it: its host builds (or pulls upstream) that one first,
    before the registry can answer. Upstream images (``official``) are pulled as before."""

    registry_host: str
    builder: str
    images: tuple[Distributed, ...]

    def pulls(self, host: str) -> tuple[Distributed, ...]:
        return tuple(image for image in self.images if host in image.pulled_by)


def _built(settings, image) -> bool:
    """Whether Shipyard builds the image under the settings' source (else it is pulled upstream)."""
    return bool(image.build_context) or settings.images.source == "local"


def distribution(settings, version: str | None = None) -> Distribution | None:
    """The plan of ``Distribution`` (None: the registry is off). ``version``: the tag of the
    versioned image (the release state's; default: the settings')."""
    if not settings.registry.enabled:
        return None
    topo = topology.build(settings)
    registry_host = settings.hosts_with_role(HOST_GROUP)[0].name
    own = {(inst.component.name, inst.service.image) for inst in topo.instances_of("registry")}
    pullers: dict[str, list[str]] = {}
    for host in settings.hosts:
        needed = [(i.component, i.service.image) for i in topo.instances_on(host)
                  if (i.component.name, i.service.image) not in own]
        run = {(comp.name, key) for comp, key in needed}
        for comp, image in image_plan.images_for(settings, needed):
            if not _built(settings, image) or (comp.name, image.key) not in run:
                continue  # upstream, or only a base another image is built on (the builder has it)
            ref = f"{image.local}:{version}" if version and image.tag else image_plan.image_ref(settings, comp, image.key)
            pullers.setdefault(ref, [])
            if host.name != registry_host:  # the builder has what it built
                pullers[ref].append(host.name)
    images = tuple(Distributed(ref, pushed_ref(settings, ref), tuple(hosts)) for ref, hosts in sorted(pullers.items()))
    return Distribution(registry_host, registry_host, images)
