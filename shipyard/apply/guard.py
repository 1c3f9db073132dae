"""pyinfra operations, the first of a deploy on each host: refuse a deploy whose secrets are not
the ones the host runs with, or whose ports something else already holds there.

A second checkout of the repo (or another machine) holding other secrets for the same
environment would otherwise overwrite the deployed secret files, report nothing changed, and
leave the platform crash-looping at its next restart (PostgreSQL keeps its password in its
data). The host records each secret's fingerprint (never the value) in
``<project>/secrets/fingerprints``; a deploy whose fingerprints differ stops here, before
anything on the host is touched, and says how to adopt the environment's secrets. A host that
still runs the value a pending rotation of this checkout replaces is not a conflict: the deploy
goes on and applies the rotation (shipyard.apply.rotation).

What these guards and the engine's operation after them read on the host (the fingerprints,
what holds ports, the engine's state) is read in one round trip — the environment's lock's,
once it is taken (``read_with_lock``), else the first guard's; nothing on the host changes before
the last of them has looked (a round trip is ~0.1 s a host over SSH). The same read notes which
of the images the host runs it holds, for an image delivery's comparisons
(shipyard.apply.image_delivery), which would otherwise each ask again.
"""

from __future__ import annotations

from collections.abc import Callable

from pyinfra import host
from pyinfra.api import FactBase, operation
from pyinfra.api.exceptions import OperationError

from shipyard import commands, hostports
from shipyard.apply import engine
from shipyard.apply.image_build import DockerImageLabels
from shipyard.image_plan import ObservedImage
from shipyard.secretstore import Secret, differing, parse_fingerprints
from shipyard.settings import EnvironmentSettings, HostSettings

FINGERPRINTS = "fingerprints"  # in the project's root-only secrets dir


class RecordedFingerprints(FactBase):
    """name → fingerprint, as the host recorded them at its last deploy ({} when never deployed)."""

    def command(self, path: str) -> str:
        return commands.to_shell(["cat", path]) + " 2>/dev/null || true"

    @staticmethod
    def default():
        return {}

    def process(self, output):
        return parse_fingerprints("\n".join(output))


@operation(is_idempotent=True)
def same_secrets(root: str, env: str, values: dict[str, Secret], previous: dict[str, Secret],
                 images: tuple[str, ...] = ()):
    recorded = _before_changes(root, images)[0]
    changed = differing(recorded, values, previous)
    if changed:
        message = (f"host {host.name}: {root} runs with other secrets than this checkout holds "
                   f"({', '.join(changed)} differ); nothing was changed.\n"
                   f"fix: deploy from the checkout that deployed it, or adopt its secrets here: copy its "
                   f"secrets/{env}/ and its age identity (~/.config/shipyard/age/{env}.key) to this checkout; "
                   f"to start the environment over instead: make down ENV={env} VOLUMES=1 (deletes its data); "
                   f"to change a secret on purpose: make secrets-rotate ENV={env} NAME=<secret>")
        print(message, flush=True)  # once, readable: pyinfra repeats an exception's text
        raise OperationError(f"host {host.name}: other secrets than the deployed ones (report above)")
    host.noop(f"{len(recorded)} recorded secrets match" if recorded else "first deploy: no secrets recorded yet")
    return
    yield  # an operation is a generator; this one only checks


def ensure_same_secrets(root: str, env: str, values: dict[str, Secret], previous: dict[str, Secret],
                        images: list[str] | tuple[str, ...] = ()) -> None:
    """``images``: refs whose presence on the host the same read records (``held_images``)."""
    same_secrets(name="the host runs with this checkout's secrets", root=root, env=env, values=values,
                 previous=previous, images=tuple(images))


class PortHolders(FactBase):
    """Listening TCP sockets and other containers' published ports: what would make a bind fail."""

    _SPLIT = "--- shipyard: docker ps ---"

    def command(self) -> str:
        ps = commands.to_shell(["docker", "ps", "--format",
                                '{{.Label "com.docker.compose.project"}}\t{{.Names}}\t{{.Ports}}'])
        # No docker yet (a fresh host): no container holds anything.
        return f"cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; echo '{self._SPLIT}'; {ps} 2>/dev/null || true"

    @staticmethod
    def default():
        return ("", "")

    def process(self, output):
        text = "\n".join(output)
        tcp, _, ps = text.partition(self._SPLIT)
        return tcp, ps


@operation(is_idempotent=True)
def ports_free(settings: EnvironmentSettings, this_host: HostSettings):
    tcp, ps = _before_changes(commands.project_dir(settings.deploy_root, settings.name))[1]
    clashes = hostports.clashes(settings, this_host, hostports.holders(tcp, ps, settings.compose_project))
    if clashes:
        print(f"host {host.name}: ports this deploy would publish are taken; nothing was changed:\n  "
              + "\n  ".join(clashes)
              + f"\nfix: stop what holds them, or choose other ports in inventories/{settings.name}.py "
                f"(or SHIPYARD_PORTS__<NAME>=...)", flush=True)
        raise OperationError(f"host {host.name}: {len(clashes)} port(s) already taken (report above)")
    host.noop("every port this host publishes is free or already this environment's")
    return
    yield  # an operation is a generator; this one only checks


def ensure_ports_free(settings: EnvironmentSettings, this_host: HostSettings) -> None:
    ports_free(name="the ports this host publishes are free", settings=settings, this_host=this_host)


class BeforeChanges(FactBase):
    """RecordedFingerprints, PortHolders, the engine's DockerEngineState and DockerImageLabels
    of ``images`` in one command, run at once (each a few docker CLI start-ups: in turn they
    added up): each one's output given to its own ``process``."""

    _PARTS = (RecordedFingerprints, PortHolders, engine.DockerEngineState, DockerImageLabels)

    def command(self, fingerprints: str, images: tuple[str, ...] = ()) -> str:
        # No docker yet (a fresh host), or no image asked for: no image held.
        held = (f"if command -v docker >/dev/null 2>&1; then {DockerImageLabels().command(images)}; fi"
                if images else "true")
        parts = (RecordedFingerprints().command(fingerprints), PortHolders().command(),
                 engine.DockerEngineState().command(), held)
        return commands.parallel([["sh", "-c", part] for part in parts])

    def process(self, output):
        parts = commands.split_parallel("\n".join(output), len(self._PARTS))
        if any(code < 0 for code, _, _ in parts):
            raise ValueError(f"expected {len(self._PARTS)} parts, got {sum(code >= 0 for code, _, _ in parts)}")
        return tuple(fact().process(stdout.splitlines()) for fact, (_, stdout, _) in zip(self._PARTS, parts))


# host name → (fingerprints, port holders, (refs asked, ref → image held)), read by the first
# guard of the host's deploy.
_READ: dict[str, tuple] = {}


def _before_changes(root: str, images: tuple[str, ...] = ()) -> tuple:
    if host.name not in _READ:
        _keep(host.name, images, host.get_fact(BeforeChanges, fingerprints=_fingerprints_path(root), images=images))
    return _READ[host.name]


def _fingerprints_path(root: str) -> str:
    return f"{root}/secrets/{FINGERPRINTS}"


def _keep(host_name: str, images: tuple[str, ...], read: tuple) -> None:
    fingerprints, ports, engine_state, held = read
    _READ[host_name] = (fingerprints, ports, (frozenset(images), held))
    engine.remember_state(host_name, engine_state)  # for its operation, right after the guards


def read_with_lock(root: str, images: list[str] | tuple[str, ...] = ()) -> tuple[str, Callable[[str, list[str]], None]]:
    """(the guards' read as a command, what keeps its output) for the environment's lock to run
    once taken, in its own round trip (shipyard.apply.hostlock.host_lock): the guards then read
    nothing more. ``images``: as ``ensure_same_secrets``'s."""
    images = tuple(images)

    def keep(host_name: str, lines: list[str]) -> None:
        _keep(host_name, images, BeforeChanges().process(lines))

    return BeforeChanges().command(_fingerprints_path(root), images=images), keep


def held_images(host_name: str, refs: list[str] | tuple[str, ...]) -> dict[str, ObservedImage] | None:
    """ref → image of those of ``refs`` that host ``host_name`` (pyinfra's name) held when its
    guards read it, or None when that read did not ask for all of them (ask the host instead).
    What the deploy itself changes afterwards (an image it fetched) is not in it."""
    read = _READ.get(host_name)
    if read is None or not set(refs) <= read[2][0]:
        return None
    return {ref: image for ref, image in read[2][1].items() if ref in refs}
