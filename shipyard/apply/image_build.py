"""pyinfra operation: the locally built images on a host, rebuilt only when their source changed.

``ensure_images(local_build_plan(...), repo_root, remote_build_root)`` adds ONE operation per
host. At run time it reads every image it cares about with one ``docker image inspect``
(fact ``DockerImageLabels``), decides with the pure ``plan_image_builds`` which images are out
of date, and only then ships their build contexts and builds them, in plan order:

- an image is rebuilt when it is missing, when its ``org.shipyard.source-hash`` label differs
  from ``ImageBuild.source_hash`` (the context's files changed), or when the image named by its
  ``BASE_IMAGE`` build arg is rebuilt in the same run or is no longer the image it was built on
  (label ``org.shipyard.base-id``) — so a new base always carries its images along;
- a context is shipped as one tar (``<remote_build_root>/<name>``), then built by
  ``images/build-image.sh`` (docker build with the labels; the app's wheelhouse first) or, for
  the debootstrap base, ``images/base/build.sh``. Both print their log's tail on failure, so the
  deploy stops with the reason;
- nothing to build: the operation yields no command and reports no change (one fact call).
"""

from __future__ import annotations

import io
import logging
import tarfile
from collections.abc import Iterator, Mapping

from pathlib import Path, PurePosixPath

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, StringCommand, operation

from shipyard.commands import to_shell
from shipyard.errors import RolloutError
from shipyard.image_plan import (SOURCE_HASH_LABEL, ImageBuild, PlannedBuild, context_files, parse_image_inspect,
                                 plan_image_builds, refs_to_inspect, wheel_file_prefix)

log = logging.getLogger("shipyard")

BUILD_SCRIPT = "images/build-image.sh"  # repo-relative; shipped next to the contexts
BASE_BUILD_SCRIPT = "build.sh"  # inside a debootstrap context


def image_dir_name(ref: str) -> str:
    """``shipyard/postgres:15`` → ``postgres``: the folder its context is shipped to."""
    name = ref.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]
    return name or "image"


def context_tar(root: Path, include: tuple[str, ...] = (), extra: Mapping[str, bytes] | None = None) -> bytes:
    """A deterministic tar of a build context (mtime 0, root-owned, modes kept): the files
    that go into the image (``include``), plus extra files (the build script, the wheelhouse)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = [(p.relative_to(root).as_posix(), p.read_bytes(), p.stat().st_mode & 0o777)
                   for p in context_files(root, include)]
        entries += [(name, data, 0o755) for name, data in sorted((extra or {}).items())]
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def wheelhouse_files(wheelhouse: Path | None) -> dict[str, bytes]:
    """``wheelhouse/<wheel>`` → bytes, for a context built with one; the user's packages the
    image installs (Image.packages) in ``wheelhouse/packages/``."""
    if wheelhouse is None:
        return {}
    files = {f"wheelhouse/{p.name}": p.read_bytes() for p in sorted(wheelhouse.glob("*.whl"))}
    files |= {f"wheelhouse/packages/{p.name}": p.read_bytes() for p in sorted(wheelhouse.glob("packages/*.whl"))}
    return files


def pinned_wheel_files(wheels_dir: Path | None, requirements: tuple[str, ...]) -> dict[str, bytes]:
    """``wheels/<wheel>`` → bytes of each pinned requirement's wheel (fetched on the deploying
    machine: shipyard.controller.wheelhouse.prepare_pinned_wheels)."""
    files = {}
    for requirement in requirements:
        found = sorted(wheels_dir.glob(wheel_file_prefix(requirement) + "*.whl")) if wheels_dir else []
        if not found:
            raise RolloutError(f"image build ({requirement})", f"its wheel is not in {wheels_dir}",
                               "deploy through `make up` / `make deploy`, which fetches it first")
        files[f"wheels/{found[0].name}"] = found[0].read_bytes()
    return files


def build_argv(build: ImageBuild, remote_dir: str) -> list[str]:
    """The one command that builds ``build`` from its context shipped to ``remote_dir``."""
    if build.debootstrap:
        return ["sh", f"{remote_dir}/{BASE_BUILD_SCRIPT}", build.ref, build.source_hash]
    argv = ["sh", f"{remote_dir}/{PurePosixPath(BUILD_SCRIPT).name}", build.ref, build.source_hash, remote_dir]
    argv += [f"{key}={value}" for key, value in sorted(build.build_args.items())]
    return argv


# --- impure: reading the host, shipping and building ------------------------------------------

INSPECT_FORMAT = "{{json .RepoTags}} {{.Id}} {{json .Config.Labels}}"


class DockerImageLabels(FactBase):
    """ref → ObservedImage for those of ``refs`` present on the host; one docker call."""

    def requires_command(self, refs) -> str:
        return "docker"

    def command(self, refs) -> str:
        # Missing images make docker exit 1 while still printing the ones it found.
        return to_shell(["docker", "image", "inspect", "--format", INSPECT_FORMAT, *refs]) + " 2>/dev/null || true"

    def process(self, output):
        return parse_image_inspect(output)

    @staticmethod
    def default():
        return {}


def build_context_tar(build: ImageBuild, repo: Path, wheelhouse: Path | None, wheels_dir: Path | None) -> bytes:
    """Everything ``build_argv`` needs in the directory it builds from, as one tar."""
    extra = {} if build.debootstrap else {PurePosixPath(BUILD_SCRIPT).name: (repo / BUILD_SCRIPT).read_bytes()}
    if build.wheelhouse:
        extra.update(wheelhouse_files(wheelhouse))
    extra.update(pinned_wheel_files(wheels_dir, build.wheels))
    return context_tar(repo / build.context, build.include, extra)


def _build_commands(planned: PlannedBuild, repo: Path, remote_build_root: str, wheelhouse: Path | None,
                    wheels_dir: Path | None) -> Iterator:
    build = planned.build
    remote_dir = f"{remote_build_root.rstrip('/')}/{image_dir_name(build.ref)}"
    tar_path = f"{remote_dir}.tar"
    yield FileUploadCommand(io.BytesIO(build_context_tar(build, repo, wheelhouse, wheels_dir)), tar_path)
    yield StringCommand(" && ".join(to_shell(argv) for argv in (
        ["rm", "-rf", remote_dir], ["mkdir", "-p", remote_dir], ["tar", "-C", remote_dir, "-xf", tar_path],
        ["rm", "-f", tar_path])))
    yield StringCommand(to_shell(build_argv(build, remote_dir)))


@operation()
def local_images(builds: list[ImageBuild], repo_root: str, remote_build_root: str, wheelhouse: str | None,
                 wheels_dir: str | None = None):
    """Build the images of ``builds`` that are missing or out of date on the host, in order."""
    observed = host.get_fact(DockerImageLabels, refs=refs_to_inspect(builds))
    planned = plan_image_builds(builds, observed)
    if not planned:
        host.noop(f"{len(builds)} images up to date: {', '.join(b.ref for b in builds)}")
        return
    for item in planned:
        log.warning("host %s: build %s: %s", host.name, item.build.ref, item.reason)
    yield StringCommand(to_shell(["mkdir", "-p", remote_build_root]))
    repo = Path(repo_root)
    for item in planned:
        yield from _build_commands(item, repo, remote_build_root, Path(wheelhouse) if wheelhouse else None,
                                   Path(wheels_dir) if wheels_dir else None)
    # Replaced images of ours that nothing uses any more (never another project's images).
    yield StringCommand(to_shell(["docker", "image", "prune", "--force", "--filter", f"label={SOURCE_HASH_LABEL}"])
                        + " >/dev/null")


def ensure_images(builds: list[ImageBuild], repo_root: str, remote_build_root: str, wheelhouse: str | None,
                  wheels_dir: str | None = None) -> None:
    if not builds:
        return
    names = ", ".join(image_dir_name(b.ref) for b in builds)
    local_images(name=f"images built on the host ({names})", builds=list(builds), repo_root=repo_root,
                 remote_build_root=remote_build_root, wheelhouse=wheelhouse, wheels_dir=wheels_dir)
