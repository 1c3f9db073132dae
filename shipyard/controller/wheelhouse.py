"""The task platform's wheelhouse, and the pinned wheels local images carry (OpenBao's ``bao``),
fetched once per deploy on the deploying machine.

Binary wheels for the images' own Python (shipyard.image_plan.IMAGE_PYTHON), whatever Python runs
the deploy, plus the project's own (pure-Python) wheel; cached under
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

from shipyard import image_plan
from shipyard.errors import ShipyardError


def _key(requirements: Path, context: Path, include: tuple[str, ...], machine: str) -> str:
    digest = hashlib.sha256(requirements.read_bytes())
    digest.update(f"{image_plan.IMAGE_PYTHON} {machine} {image_plan.hash_tree(context, include=include)}".encode())
    return digest.hexdigest()[:16]


def prepare_wheelhouse(repo: Path) -> Path | None:
    """The wheelhouse dir (created when missing), or None when no image needs one."""
    wanted = image_plan.wheelhouse_requirements(repo)
    if not wanted:
        return None
    if len(wanted) > 1:
        raise NotImplementedError("one wheelhouse per deploy: a second image with one needs its own cache key")
    requirements, context, include = wanted[0]
    machine = platform.machine()
    dest = repo / ".shipyard" / "wheelhouse" / _key(requirements, context, include, machine)
    if (dest / ".complete").exists():
        return dest
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    # The project's own wheel is built from a copy of what goes into the image: an in-tree
    # build would leave build/ and *.egg-info in the source tree.
    source = partial / ".source"
    for path in image_plan.context_files(context, include):
        target = source / path.relative_to(context)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    steps = [image_plan.wheelhouse_argv(sys.executable, requirements, partial, machine),
             [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
              str(source), "-w", str(partial)]]
    for argv in steps:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
            raise ShipyardError(f"wheelhouse for {context.name} ({requirements.name})",
                                f"`{' '.join(argv[:4])} ...` failed:\n{tail}",
                                f"check that PyPI (or your pip index) answers and has Python {image_plan.IMAGE_PYTHON} "
                                f"{machine} wheels for every pinned requirement")
    shutil.rmtree(source)
    (partial / ".complete").write_text("")
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    return dest


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
