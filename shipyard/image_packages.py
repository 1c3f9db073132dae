"""A user's Python packages that an image Shipyard builds installs beside its own code (the task
platform's kinds packages: ``SHIPYARD.app.kinds_packages``). Pure: files are read, nothing runs.

Each package comes from one of

- ``path``: a Python project directory (``pyproject.toml``), repo-relative or absolute, built
  into a wheel on the deploying machine (shipyard.controller.wheelhouse) from a copy of its files;
- ``wheel``: a wheel file, repo-relative or absolute, shipped as it is;
- ``requirement``: a pinned requirement (``name==version``) fetched from the deploying machine's
  pip index as a wheel for the image's Python.

Hosts never build or fetch them: the wheels travel in the image's build context (its
``wheelhouse/packages/``) and are installed offline. What goes into the image is hashed
(``content_hash``: a project's files, a wheel's bytes, a requirement's pin), so a changed package
is a changed image (a rebuild, a new release version) and an unchanged one is not.
"""

from __future__ import annotations

import configparser
import hashlib
import re
import tomllib
import zipfile
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field, model_validator

from shipyard.component import Strict

# A pinned requirement: its version is the package's identity in the image hash.
PINNED = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?==[A-Za-z0-9][A-Za-z0-9.+!_-]*$"
# What a project directory holds that is not the project (builds, caches, environments).
_SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".git", ".hg", ".venv", "venv",
                 "build", "dist", ".tox", ".nox"}


class PythonPackage(Strict):
    """One package: exactly one of ``path``, ``wheel``, ``requirement``."""

    path: str | None = Field(None, min_length=1, description="a Python project directory (pyproject.toml), relative "
                                                             "to the checkout or absolute; built into a wheel on the "
                                                             "deploying machine")
    wheel: str | None = Field(None, min_length=1, description="a wheel file (.whl), relative to the checkout or absolute")
    requirement: str | None = Field(None, pattern=PINNED, description="a pinned requirement (name==version) from the "
                                                                      "deploying machine's pip index")

    @model_validator(mode="after")
    def _exactly_one_source(self):
        given = [name for name in ("path", "wheel", "requirement") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of path, wheel, requirement (got {', '.join(given) or 'none'})")
        return self

    @property
    def shown(self) -> str:
        return self.path or self.wheel or self.requirement or ""


def resolve(repo: Path, value: str) -> Path:
    """A package's path or wheel setting as a path on the deploying machine."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else repo / path


def project_files(root: Path) -> list[Path]:
    """The files of a project directory that make its wheel, sorted: builds, caches, VCS and
    virtual environments left out (``*.egg-info`` too: setuptools writes it in the tree)."""
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if (not path.is_file() or path.suffix in (".pyc", ".pyo")
                or any(part in _SKIPPED_DIRS or part.endswith(".egg-info") for part in rel.parts[:-1])):
            continue
        files.append(path)
    return files


def content_hash(repo: Path, packages: Sequence[PythonPackage]) -> str:
    """sha256 over what each package puts into the image, in the settings' order: a project's
    files (path + bytes), a wheel's name and bytes, a requirement's pin."""
    digest = hashlib.sha256()
    for package in packages:
        if package.path is not None:
            root = resolve(repo, package.path)
            digest.update(b"path\0")
            for path in project_files(root):
                digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
        elif package.wheel is not None:
            wheel = resolve(repo, package.wheel)
            digest.update(b"wheel\0" + wheel.name.encode() + b"\0" + wheel.read_bytes() + b"\0")
        else:
            digest.update(b"requirement\0" + (package.requirement or "").encode() + b"\0")
    return digest.hexdigest()[:16]


def entry_points(repo: Path, package: PythonPackage) -> dict[str, dict[str, str]] | None:
    """The entry points a package declares (group → name → value), read from its
    pyproject.toml or its wheel's metadata; None for a requirement (not known before it is
    fetched). Assumes ``problems`` found nothing."""
    if package.path is not None:
        project = tomllib.loads((resolve(repo, package.path) / "pyproject.toml").read_text()).get("project", {})
        groups = dict(project.get("entry-points", {}))
        for key, group in (("scripts", "console_scripts"), ("gui-scripts", "gui_scripts")):
            if key in project:
                groups[group] = project[key]
        return {group: dict(points) for group, points in groups.items()}
    if package.wheel is not None:
        with zipfile.ZipFile(resolve(repo, package.wheel)) as wheel:
            names = [n for n in wheel.namelist() if re.fullmatch(r"[^/]+\.dist-info/entry_points\.txt", n)]
            if not names:
                return {}
            parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
            parser.optionxform = str  # entry point names keep their case
            parser.read_string(wheel.read(names[0]).decode())
            return {group: dict(parser[group]) for group in parser.sections()}
    return None


def problems(repo: Path, packages: Sequence[PythonPackage], key: str) -> list[tuple[str, str, str]]:
    """(key path, what, fix) for each package that cannot be built or shipped from this
    checkout: a path that is not a Python project, a wheel that is not there or not a wheel,
    and two packages of one project name."""
    found: list[tuple[str, str, str]] = []
    names: dict[str, str] = {}
    for n, package in enumerate(packages):
        if package.path is not None:
            where, root = f"{key}.{n}.path", resolve(repo, package.path)
            if not root.is_dir():
                found.append((where, f"{root} is not a directory", "give the directory holding the package's "
                              "pyproject.toml, relative to the checkout or absolute"))
                continue
            pyproject = root / "pyproject.toml"
            if not pyproject.is_file():
                found.append((where, f"{root} has no pyproject.toml: not a Python project",
                              "add a pyproject.toml with [build-system] and [project] (docs/task-platform.md, "
                              "'Task kinds: a team adds its own'), or point path at the project's root"))
                continue
            try:
                project = tomllib.loads(pyproject.read_text()).get("project")
            except tomllib.TOMLDecodeError as exc:
                found.append((where, f"{pyproject} is not valid TOML: {exc}", "fix the file"))
                continue
            if not isinstance(project, dict) or not isinstance(project.get("name"), str):
                found.append((where, f"{pyproject} has no [project] name", "add [project] with name and version"))
                continue
            name = project["name"]
        elif package.wheel is not None:
            where, wheel = f"{key}.{n}.wheel", resolve(repo, package.wheel)
            if wheel.suffix != ".whl" or not wheel.is_file():
                found.append((where, f"{wheel} is not a wheel file (*.whl)", "build it (`pip wheel --no-deps DIR`) "
                              "and give its path, or give the project directory as path"))
                continue
            if not zipfile.is_zipfile(wheel):
                found.append((where, f"{wheel} is not a zip archive: not a wheel", "build the wheel again"))
                continue
            name = wheel.name.split("-", 1)[0]
        else:
            where, name = f"{key}.{n}.requirement", (package.requirement or "").split("==", 1)[0]
        canonical = re.sub(r"[-_.]+", "-", name).lower()
        if canonical in names:
            found.append((where, f"package {name!r} is also given at {names[canonical]}", "give each package once"))
        names[canonical] = where
    return found
