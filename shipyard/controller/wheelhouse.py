"""The task platform's wheelhouse, and the pinned wheels local images carry (OpenBao's ``bao``),
fetched once per deploy on the deploying machine.

Binary wheels for the images' own Python (shipyard.image_plan.IMAGE_PYTHON), whatever Python runs
the deploy, plus the project's own (pure-Python) wheel and the user's packages the image
installs (the task platform's kinds packages: a project built into a wheel from a copy, a wheel,
a pinned requirement, in ``packages/``, their dependencies beside the rest); cached under
``.shipyard/wheelhouse/<hash>/`` keyed by what goes into it, so a re-run fetches nothing. Hosts
that build the image receive it inside the build context; no host builds wheels itself.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from shipyard import image_packages, image_plan
from shipyard.errors import ShipyardError


def _key(wanted: image_plan.Wheelhouse, repo: Path, machine: str) -> str:
    digest = hashlib.sha256(wanted.requirements.read_bytes())
    digest.update(f"{image_plan.IMAGE_PYTHON} {machine} {image_plan.hash_tree(wanted.context, include=wanted.include)}".encode())
    if wanted.packages:
        digest.update(f" packages {image_packages.content_hash(repo, wanted.packages)}".encode())
    return digest.hexdigest()[:16]


def _run(argv: list[str], where: str, fix: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise ShipyardError(where, f"`{' '.join(argv[:4])} ...` failed:\n{tail}", fix)


def _copy(files: list[Path], root: Path, dest: Path) -> Path:
    for path in files:
        target = dest / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return dest


def prepare_wheelhouse(repo: Path, settings=None) -> Path | None:
    """The wheelhouse dir (created when missing), or None when no image needs one. With
    ``settings``, it holds the user's packages the image installs (Image.packages) too:
    ``packages/<wheel>`` each, their dependencies beside the platform's."""
    wanted_all = image_plan.wheelhouse_requirements(repo, settings)
    if not wanted_all:
        return None
    if len(wanted_all) > 1:
        raise NotImplementedError("one wheelhouse per deploy: a second image with one needs its own cache key")
    wanted = wanted_all[0]
    requirements, context = wanted.requirements, wanted.context
    machine = platform.machine()
    dest = repo / ".shipyard" / "wheelhouse" / _key(wanted, repo, machine)
    if (dest / ".complete").exists():
        return dest
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    # The project's own wheel is built from a copy of what goes into the image: an in-tree
    # build would leave build/ and *.egg-info in the source tree.
    source = _copy(image_plan.context_files(context, wanted.include), context, partial / ".source")
    fetch_fix = (f"check that PyPI (or your pip index) answers and has Python {image_plan.IMAGE_PYTHON} "
                 f"{machine} wheels for every pinned requirement")
    where = f"wheelhouse for {context.name} ({requirements.name})"
    _run(image_plan.wheelhouse_argv(sys.executable, requirements, partial, machine), where, fetch_fix)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
          str(source), "-w", str(partial)], where, fetch_fix)
    shutil.rmtree(source)
    if wanted.packages:
        _add_packages(repo, wanted, partial, machine)
    (partial / ".complete").write_text("")
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    return dest


def _add_packages(repo: Path, wanted: image_plan.Wheelhouse, partial: Path, machine: str) -> None:
    """The user's packages as wheels in ``partial/packages`` (a project built from a copy of its
    files, a wheel copied, a requirement fetched for the image's Python), then their
    dependencies in ``partial``, held to the platform's pins."""
    out = partial / "packages"
    out.mkdir()
    for n, package in enumerate(wanted.packages):
        where = f"package {package.shown} (of the image built from {wanted.context.name})"
        if package.path is not None:
            root = image_packages.resolve(repo, package.path)
            copy = _copy(image_packages.project_files(root), root, partial / f".package-{n}")
            _run(image_plan.package_wheel_argv(sys.executable, copy, out), where,
                 "check that `pip wheel --no-deps <its directory>` builds it (its [build-system] must be "
                 "fetchable from your pip index)")
            shutil.rmtree(copy)
        elif package.wheel is not None:
            wheel = image_packages.resolve(repo, package.wheel)
            shutil.copy2(wheel, out / wheel.name)
        else:
            _run(image_plan.package_download_argv(sys.executable, package.requirement or "", out, machine), where,
                 f"check that your pip index has a Python {image_plan.IMAGE_PYTHON} wheel of it (pure Python, or "
                 f"for {machine} Linux)")
    constraints = partial / ".constraints.txt"
    constraints.write_text(image_plan.constraints_text(wanted.requirements.read_text()))
    _run(image_plan.package_dependencies_argv(sys.executable, sorted(out.glob("*.whl")), constraints, partial,
                                              partial, machine),
         "the dependencies of the image's packages (" + ", ".join(p.shown for p in wanted.packages) + ")",
         f"check that they can be had as Python {image_plan.IMAGE_PYTHON} wheels and agree with the platform's "
         f"pins ({wanted.requirements})")
    constraints.unlink()


def prepare_pinned_wheels(repo: Path, settings) -> Path | None:
    """``.shipyard/wheels/`` holding every pinned wheel the environment's local images need
    (None when none does); a wheel already there is not fetched again."""
    wanted = image_plan.pinned_wheels(settings)
    if not wanted:
        return None
    dest = repo / ".shipyard" / "wheels"
    dest.mkdir(parents=True, exist_ok=True)
    machine = platform.machine()
    for requirement in wanted:
        if any(dest.glob(image_plan.wheel_file_prefix(requirement) + "*.whl")):
            continue
        argv = image_plan.pinned_wheel_argv(sys.executable, requirement, dest, machine)
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not any(dest.glob(image_plan.wheel_file_prefix(requirement) + "*.whl")):
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
            raise ShipyardError(f"wheel {requirement} for a local image", f"`pip download` failed:\n{tail}",
                                f"check that PyPI (or your pip index) answers and has a {machine} Linux wheel of it")
    return dest
