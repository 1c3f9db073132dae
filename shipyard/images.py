"""Image sources: which image each component runs, and how local images are built.

Pure: no docker, no subprocess. The apply layer (shipyard/apply/images.py) turns an
``ImageBuild`` plan into pyinfra operations on a host.

Two sources (settings ``images.source``):
- ``official``: pinned upstream tags, optionally behind a registry-mirror prefix for
  air-gapped sites (``mirror.example:5000/library/postgres:15.10-bookworm``).
- ``local``: built on the host from Debian packages on a debootstrap base; used where no
  registry answers (CI here). Local images follow the official images' conventions
  (env vars, paths, uids) so the rendered compose files are the same apart from the image.

The task platform image is always built from ``services/``; only its base differs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ImageSource = Literal["official", "local"]

# Official tags pinned to Debian bookworm variants so that both sources run the same
# major versions as Debian's packages (PostgreSQL 15, Redis 7.0, nginx 1.22).
OFFICIAL_IMAGES: dict[str, str] = {
    "postgres": "postgres:15.10-bookworm",
    "redis": "redis:7.0.15-bookworm",
    "nginx": "nginx:1.22.1",
    "python": "python:3.11-slim-bookworm",
}

LOCAL_IMAGES: dict[str, str] = {
    "base": "shipyard/base:bookworm",
    "postgres": "shipyard/postgres:15",
    "redis": "shipyard/redis:7.0",
    "nginx": "shipyard/nginx:1.22",
    "python": "shipyard/python:3.11",
}

APP_IMAGE_NAME = "shipyard/taskplatform"

# The label that records which build context an image was built from; the apply layer
# rebuilds when it differs from ImageBuild.source_hash.
SOURCE_HASH_LABEL = "org.shipyard.source-hash"


@dataclass(frozen=True)
class ImageBuild:
    """One image to build on a host, in dependency order."""

    ref: str  # name:tag to produce
    context: str  # repo-relative build context directory ("" for the debootstrap base)
    source_hash: str  # sha256 over the context's files (+ base ref); drives rebuilds
    build_args: dict[str, str] = field(default_factory=dict)
    debootstrap: bool = False  # True: built with debootstrap + docker import, not docker build
    wheelhouse_requirements: str = ""  # repo-relative requirements file to pre-build wheels for


def official_ref(name: str, mirror: str | None) -> str:
    ref = OFFICIAL_IMAGES[name]
    if not mirror:
        return ref
    # Docker Hub official images live under library/ on a mirror.
    return f"{mirror.rstrip('/')}/library/{ref}"


# Compose service → third-party image name; services not listed run the app image.
SERVICE_IMAGES = {"postgres": "postgres", "postgres-replica": "postgres", "postgres-backup": "postgres", "redis": "redis", "redis-replica": "redis",
                  "redis-sentinel": "redis", "edge": "nginx"}


def _service_base(service: str) -> str:
    """``redis-sentinel-2`` → ``redis-sentinel``: numbered instances run their component's image."""
    base, _, number = service.rpartition("-")
    return base if number.isdigit() and base in SERVICE_IMAGES else service


def service_image(service: str, source: ImageSource, mirror: str | None, app_version: str) -> str:
    """The image a compose service runs (``postgres-replica-2`` runs the postgres image)."""
    base = _service_base(service)
    if base in SERVICE_IMAGES:
        return component_image(SERVICE_IMAGES[base], source, mirror)
    return app_image(app_version)


def images_to_pull(services: list[str], source: ImageSource, mirror: str | None) -> list[str]:
    """Upstream images a host needs from a registry (none with the ``local`` source)."""
    if source != "official":
        return []
    # The app image is built on every host, on the official python image.
    names = {SERVICE_IMAGES[_service_base(s)] for s in services if _service_base(s) in SERVICE_IMAGES} | {"python"}
    return sorted(official_ref(name, mirror) for name in names)


def component_image(name: str, source: ImageSource, mirror: str | None) -> str:
    """The image a third-party component (postgres, redis, nginx) runs."""
    if source == "local":
        return LOCAL_IMAGES[name]
    return official_ref(name, mirror)


def app_image(version: str) -> str:
    return f"{APP_IMAGE_NAME}:{version}"


def hash_tree(root: Path, *extra: str) -> str:
    """sha256 over every file below ``root`` (path + bytes), sorted, plus ``extra`` strings."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if "__pycache__" in rel or rel.startswith("wheelhouse/") or ".pytest_cache" in rel:
            continue
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    for item in extra:
        digest.update(item.encode() + b"\0")
    return digest.hexdigest()[:16]


def local_build_plan(repo: Path, source: ImageSource, mirror: str | None, app_version: str) -> list[ImageBuild]:
    """Images to build on a host, base first. With ``official`` only the app is built."""
    builds: list[ImageBuild] = []
    if source == "local":
        base = LOCAL_IMAGES["base"]
        builds.append(ImageBuild(ref=base, context="images/base", debootstrap=True,
                                 source_hash=hash_tree(repo / "images/base")))
        for name in ("python", "postgres", "redis", "nginx"):
            builds.append(ImageBuild(
                ref=LOCAL_IMAGES[name], context=f"images/{name}",
                source_hash=hash_tree(repo / f"images/{name}", base),
                build_args={"BASE_IMAGE": base},
            ))
        python_base = LOCAL_IMAGES["python"]
    else:
        python_base = official_ref("python", mirror)
    builds.append(ImageBuild(
        ref=app_image(app_version), context="services",
        source_hash=hash_tree(repo / "services", python_base),
        build_args={"BASE_IMAGE": python_base},
        wheelhouse_requirements="services/requirements.txt",
    ))
    return builds
