"""What the rest of a deploy needs of the registry, as data (pure: the apply layer runs it):

- ``trust_files``: the files a host's Docker engine needs to trust the registry's CA
  (``/etc/docker/certs.d/<name>:<port>/ca.crt``, which dockerd reads per registry, no restart);
- ``login_argv``: `docker login` as the registry's user, the password on stdin (never on argv);
- ``pushed_ref`` / ``push_argvs`` / ``pull_argvs``: an image Shipyard builds, under its name in
  the registry (``<name>:<port>/shipyard/<image>:<tag>``); a host pulls it and tags it with the
  name its compose file runs, so the render stays the same with or without a registry;
- ``DELIVERY``: all of it as the component's ImageDelivery (shipyard.component), which the deploy
  runs (shipyard.apply.image_delivery): the deploying machine builds every image once and pushes
  it; each host pulls what its services run (shipyard.image_plan.delivered_refs).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from shipyard.component import ImageDelivery
from shipyard.components.registry import certificates

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
    from shipyard import image_plan  # the component registry imports this module: not at load

    return f"{NAMESPACE}/{image_plan.normalize_ref(ref.removeprefix(f'{NAMESPACE}/'))}"


def pushed_ref(settings, ref: str) -> str:
    """``shipyard/postgres:15`` → ``<name>:<port>/shipyard/postgres:15``: how the hosts pull it."""
    return f"{endpoint(settings)}/{repository_ref(ref)}"


def push_argvs(settings, ref: str) -> list[list[str]]:
    """On the building host: tag the built image with its registry name, push it."""
    return [["docker", "tag", ref, pushed_ref(settings, ref)], ["docker", "push", pushed_ref(settings, ref)]]


def push_rounds(layers: dict[str, Sequence[str]], sizes: dict[str, int]) -> list[list[str]]:
    """The order the deploying machine pushes ``layers``' refs (ref → its layer ids; ``sizes``:
    ref → bytes): one image alone first, then every other together (the pusher runs a few at a
    time).

    Our images share their base layer (the debootstrap base), and the engine does not share one
    layer's upload between two pushes to different repositories: pushed together, each would
    send it again. So the first push is of the image whose layers the most others share — of
    those, the smallest, since nothing else goes meanwhile (ties: the name) — and the others
    find the shared layers in the registry and only mount them."""
    def shared(ref: str) -> int:
        return sum(1 for other, theirs in layers.items() if other != ref for layer in set(layers[ref]) if layer in theirs)

    refs = sorted(layers)
    if len(refs) < 2:
        return [refs] if refs else []
    first = min(refs, key=lambda ref: (-shared(ref), sizes.get(ref, 0), ref))
    return [[first], [ref for ref in refs if ref != first]]


def pull_argvs(settings, ref: str) -> list[list[str]]:
    """On a host that runs it: pull it from the registry, tag it with the name compose runs."""
    return [["docker", "pull", pushed_ref(settings, ref)], ["docker", "tag", pushed_ref(settings, ref), ref]]


def active(settings) -> bool:
    """The images go through the registry when it is on and a host is not the deploying machine
    itself (a single `@local` host builds its own, as before)."""
    return settings.registry.enabled and any(host.connect != "@local" for host in settings.hosts)


def host_files(settings, repo: Path) -> dict[str, bytes]:
    """``trust_files`` of the CA certificate the deploying machine holds."""
    from shipyard.secretstore import read_held  # the component registry imports this module: not at load

    return trust_files(settings, read_held(repo, settings.name, certificates.CA_CERT).value)


def publish(settings, refs: Sequence[str], password: str) -> list[str]:
    from shipyard.components.registry import transfer  # subprocesses: on the deploying machine only

    return transfer.push(settings, refs, password)


DELIVERY = ImageDelivery(active=active, publish=publish, host_files=host_files, login_argv=login_argv,
                         login_secret=certificates.PASSWORD, pulled_ref=pushed_ref)
