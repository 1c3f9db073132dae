"""The images of an environment whose hosts do not build them (Component.image_delivery, the
registry: docs/registry.md), as pyinfra operations in this order — pyinfra runs each operation
on every host before the next, so each step finishes everywhere first:

1. the deploying machine builds every image any host runs, once (``built_here``: the same build
   contexts and scripts a host's build uses, rebuilt only when out of date); which of them each
   host holds was read by its guards (shipyard.apply.guard.held_images);
2. every host gets its project (shipyard.apply.rollout.ship_project), the delivering component's
   own image goes to its host over SSH (``docker save`` into ``docker load``, skipped when the
   host holds that very image), every host's project state is read once (the converges after
   take it while nothing changed the host), and the delivering service starts on its host;
3. the deploying machine publishes the others into it (``published``: those some host lacks);
4. every host (trusting it: its CA went with the project) logs in with a Docker configuration
   of the deploy's own (removed at once: no password is left in ``~/.docker``) and pulls what
   its services run, tagged with the name compose runs, unless it holds that very image
   (``fetched``).

The deploying machine's own steps ride on one host (python.call runs in the deploy's process):
the first host for the build and the publishing, the delivering host for its own image.
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Sequence
from pathlib import Path

from pyinfra import host
from pyinfra.api import StringCommand, operation
from pyinfra.api.exceptions import OperationError
from pyinfra.operations import python

from shipyard import commands, image_plan, topology
from shipyard.apply import converge, guard, image_ship, remote
from shipyard.apply.image_build import INSPECT_FORMAT, DockerImageLabels, build_argv, build_context_tar, image_dir_name
from shipyard.commands import to_shell
from shipyard.component import Component, ImageDelivery
from shipyard.apply.private_files import WantedPath, private_upload
from shipyard.apply.rollout import read_ahead, ship_project, start_first
from shipyard.bluegreen import ReleaseState
from shipyard.errors import ShipyardError
from shipyard.render import RenderedHost
from shipyard.secretstore import Secret
from shipyard.image_plan import (SOURCE_HASH_LABEL, ImageBuild, ObservedImage, parse_image_inspect, plan_fetches,
                                 plan_image_builds, refs_to_inspect)
from shipyard.settings import EnvironmentSettings, HostSettings

log = logging.getLogger("shipyard")

BUILD_TIMEOUT_S = 3600  # one image, cold: the debootstrap base and a Python wheelhouse on a slow mirror
FETCH_DIR = ".image-fetch"  # under the deploy root, 0700, only while a fetch runs


# --- on the deploying machine (python.call: the deploy's own process) ------------------------------

def _here(argv: list[str], timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)


def observed_here(refs: Sequence[str]) -> dict[str, ObservedImage]:
    """ref → image of those of ``refs`` the deploying machine's engine holds (by every tag)."""
    if not refs:
        return {}
    return parse_image_inspect(_here(["docker", "image", "inspect", "--format", INSPECT_FORMAT, *refs]).stdout.splitlines())


def built_here(builds: list[ImageBuild], repo_root: str, wheelhouse: str | None, wheels_dir: str | None) -> None:
    """Build, on the deploying machine's engine, those of ``builds`` that are missing or out of
    date there, with the contexts and scripts a host's build uses (shipyard.apply.image_build)."""
    planned = plan_image_builds(builds, observed_here(refs_to_inspect(builds)))
    if not planned:
        print(f"[deploying machine] {len(builds)} images up to date", flush=True)
        return
    repo = Path(repo_root)
    root = Path(tempfile.mkdtemp(prefix="shipyard-build-"))
    try:
        for item in planned:
            build = item.build
            print(f"[deploying machine] build {build.ref}: {item.reason}", flush=True)
            context = root / image_dir_name(build.ref)
            context.mkdir()
            tar = build_context_tar(build, repo, Path(wheelhouse) if wheelhouse else None,
                                    Path(wheels_dir) if wheels_dir else None)
            with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
                archive.extractall(context, filter="tar")
            done = _here(build_argv(build, str(context)), BUILD_TIMEOUT_S)
            if done.returncode != 0:
                raise OperationError(f"the deploying machine: image {build.ref} did not build:\n"
                                     f"{(done.stderr or done.stdout).strip()[-3000:]}\n"
                                     "fix: correct what the build's log above says (a package, the mirror, "
                                     "the disk), then deploy again")
        # Replaced images of ours that nothing uses any more (never another project's images).
        _here(["docker", "image", "prune", "--force", "--filter", f"label={SOURCE_HASH_LABEL}"])
    finally:
        shutil.rmtree(root, ignore_errors=True)


def shipped_over_ssh(target: HostSettings, refs: list[str]) -> None:
    """``refs`` from the deploying machine's engine to ``target``'s (the delivering component's
    own images, which its host needs before it can answer). What the host holds is read through
    the deploy's own connection to it: a no-op deploy makes no SSH connection for it."""
    held = guard.held_images(host.name, refs)  # as the guards' read saw them
    if held is None:
        _, inspected = remote.run(["docker", "image", "inspect", "--format", INSPECT_FORMAT, *refs])
        held = parse_image_inspect(inspected.stdout.splitlines())  # missing ones: docker exits 1, prints the others
    here = observed_here(refs)
    for ref in refs:
        if ref in held and ref in here and held[ref].id == here[ref].id:
            print(f"[{target.name}] {ref}: already there", flush=True)
            continue
        try:
            sent = image_ship.ship(target, ref)
        except ShipyardError as err:
            raise OperationError(str(err)) from err
        print(f"[{target.name}] {ref}: {'shipped over SSH' if sent else 'already there'}", flush=True)
        if sent:
            converge.forget_read(host.name)  # another image: the host's project is read again


def observed_on(host_settings: HostSettings, refs: Sequence[str]) -> dict[str, ObservedImage]:
    """ref → image of those of ``refs`` a host's engine holds: as its guards read them at the start
    of this deploy (shipyard.apply.guard.held_images), else asked over SSH."""
    held = guard.held_images(host_settings.connect, refs)
    if held is not None:
        return held
    if host_settings.connect == "@local":
        return observed_here(refs)
    argv = commands.ssh(host_settings, ["docker", "image", "inspect", "--format", INSPECT_FORMAT, *refs])
    return parse_image_inspect(_here(argv).stdout.splitlines())


def published(delivery: ImageDelivery, settings: EnvironmentSettings, refs_by_host: dict[str, list[str]],
              keep: list[str], login_value: str) -> None:
    """Push the images some host lacks, or holds in another build than this machine's: when
    every host holds them all, nothing is pushed (a deploy that changed no image stays cheap)."""
    everything = sorted({ref for refs in refs_by_host.values() for ref in refs})
    here = observed_here(everything)
    hosts = {h.name: h for h in settings.hosts}
    with ThreadPoolExecutor(max_workers=len(refs_by_host) or 1) as pool:
        there = dict(zip(refs_by_host, pool.map(lambda name: observed_on(hosts[name], refs_by_host[name]), refs_by_host)))
    try:
        wanted = sorted({ref for name, refs in refs_by_host.items() for ref, _ in plan_fetches(refs, here, there[name], keep)})
        lines = delivery.publish(settings, wanted, login_value) if wanted else []
    except ShipyardError as err:
        raise OperationError(str(err)) from err
    if not wanted:
        print(f"[deploying machine] every host holds the {len(everything)} images it runs: nothing to push", flush=True)
    for line in lines:
        print(f"[deploying machine] {line}", flush=True)


# --- on each host ----------------------------------------------------------------------------------

def fetch_script(login_argv: list[str], pulls: list[tuple[str, str]], workdir: str) -> list[str]:
    """One command that logs in with a Docker configuration of its own under ``workdir`` (the
    password in ``workdir``/login, read once and removed), pulls each (pulled ref, ref), tags it
    with the name compose runs and drops the registry's name; ``workdir`` is removed whatever
    happens, so no credential stays on the host."""
    script = ('set -e; d=$1; shift; trap \'rm -rf "$d"\' EXIT; export DOCKER_CONFIG="$d/config"; '
              f'{to_shell(login_argv)} <"$d/login" >/dev/null; rm -f "$d/login"; '
              'while [ $# -gt 0 ]; do docker pull --quiet "$1" >/dev/null; docker tag "$1" "$2"; '
              'docker image rm "$1" >/dev/null; shift 2; done')
    return ["sh", "-c", script, "sh", workdir, *[part for pull in pulls for part in pull]]


@operation()
def fetched(settings: EnvironmentSettings, delivery: ImageDelivery, refs: list[str], keep: list[str],
            login_value: str, workdir: str):
    """The host holds the deploying machine's image of each of ``refs``: those it lacks, or holds
    in another build, pulled through the delivery (read at run time, after the build)."""
    here = observed_here(refs)
    there = guard.held_images(host.name, refs)  # nothing since the guards' read fetched any
    if there is None:
        there = host.get_fact(DockerImageLabels, refs=tuple(refs))
    try:
        todo = plan_fetches(refs, here, there, keep)
    except ShipyardError as err:
        raise OperationError(str(err)) from err
    if not todo:
        host.noop(f"{len(refs)} images as the deploying machine built them")
        return
    for ref, reason in todo:
        log.warning("host %s: pull %s: %s", host.name, ref, reason)
    converge.forget_read(host.name)  # other images: the services' plans read the host again
    yield from private_upload(login_value.encode(), workdir, f"{workdir}/login")
    yield StringCommand(to_shell(fetch_script(delivery.login_argv(settings),
                                              [(delivery.pulled_ref(settings, ref), ref) for ref, _ in todo], workdir)))
    yield StringCommand(to_shell(["docker", "image", "prune", "--force", "--filter", f"label={SOURCE_HASH_LABEL}"])
                        + " >/dev/null")


def trusted(settings: EnvironmentSettings, delivery: ImageDelivery, repo: Path) -> list[WantedPath]:
    """The files that make the host's engine trust the delivery (its CA), root's, 0644: shipped
    with the project (one operation)."""
    return [WantedPath(path, 0, "644", content) for path, content in sorted(delivery.host_files(settings, repo).items())]


def _own_and_delivered(comp: Component, settings: EnvironmentSettings, this_host: HostSettings,
                       version: str | None) -> tuple[list[str], list[str]]:
    """The delivering component's own images on ``this_host`` (shipped over SSH) and the images
    its other services run (fetched through the delivery)."""
    on_host = topology.build(settings).instances_on(this_host)
    own = image_plan.built_refs(settings, [(i.component, i.service.image) for i in on_host if i.component is comp],
                                version)
    return own, image_plan.delivered_refs(settings, [(i.component, i.service.image) for i in on_host], version)


def held_refs(settings: EnvironmentSettings, this_host: HostSettings, version: str | None) -> list[str]:
    """Every image of ``this_host`` whose presence these steps compare (the guards read them)."""
    comp, _ = image_plan.delivery(settings)
    own, delivered = _own_and_delivered(comp, settings, this_host, version)
    return sorted(set(own) | set(delivered))


def deliver(delivering: tuple[Component, ImageDelivery], settings: EnvironmentSettings, this_host: HostSettings,
            repo: Path, version: str | None, keep: bool,
            rendered: RenderedHost, values: dict[str, Secret], previous: dict[str, Secret], state: ReleaseState,
            deployed: tuple[HostSettings, ...], wheelhouse: str | None, wheels_dir: str | None) -> None:
    """This host's share of the steps of the module doc, in order. ``delivering``: the component
    and its ImageDelivery (image_plan.delivery); ``version``, ``keep``: the
    versioned image's tag and whether an existing image of it stays (image_plan.build_plan);
    ``rendered``, ``values``, ``previous``, ``state``: what starting the delivering component's
    services ahead of the rollout ships (shipyard.apply.rollout.start_first); ``deployed``: the
    hosts this deploy changes (a LIMIT leaves the others as they are), the first carrying the
    deploying machine's steps."""
    comp, delivery = delivering
    topo = topology.build(settings)
    everywhere = [(i.component, i.service.image) for i in topo.instances]
    own = [i for i in topo.instances_on(this_host) if i.component is comp]
    own_refs, refs = _own_and_delivered(comp, settings, this_host, version)
    builds = image_plan.build_plan(repo, settings, everywhere, version, keep)
    login_value = values[delivery.login_secret].value
    carries = this_host is deployed[0]
    if carries:
        python.call(name=f"images built once, on the deploying machine ({len(builds)})", function=built_here,
                    builds=builds, repo_root=str(repo), wheelhouse=wheelhouse, wheels_dir=wheels_dir)
    # Every host's project now (the delivering host needs its own to start first), its state
    # read once, after the delivering host's own image, for the converges that follow while
    # nothing changes the host.
    ship_project(settings, rendered, values, previous, state, also=trusted(settings, delivery, repo))
    if own and own_refs:
        python.call(name=f"{comp.name}'s own image to this host over SSH", function=shipped_over_ssh,
                    target=this_host, refs=own_refs)
    read_ahead(settings, rendered, state)
    if own:
        start_first(settings, rendered, state, [i.name for i in own], "the other images come through it")
    if carries:
        refs_by_host = {h.name: image_plan.delivered_refs(settings, [(i.component, i.service.image)
                                                                      for i in topo.instances_on(h)], version)
                        for h in deployed}
        python.call(name=f"images published to {comp.name}", function=published, delivery=delivery,
                    settings=settings, refs_by_host=refs_by_host, keep=[b.ref for b in builds if b.keep_existing],
                    login_value=login_value)
    fetched(name=f"images pulled from {comp.name} ({len(refs)})", settings=settings, delivery=delivery, refs=refs,
            keep=[b.ref for b in builds if b.keep_existing], login_value=login_value,
            workdir=f"{settings.deploy_root}/{FETCH_DIR}-{settings.name}")
