"""The packages of task kinds an environment's image installs (``SHIPYARD.app.kinds_packages``):
what the checkout must hold for them, and what the API and workers are told to load. Pure."""

from __future__ import annotations

from pathlib import Path

from shipyard import image_packages

ENTRY_POINT_GROUP = "taskplatform.kinds"  # services/taskplatform/kinds.py: ENTRY_POINT_GROUP
KEY = "app.kinds_packages"


def packages(settings) -> tuple:
    return tuple(settings.app.kinds_packages)


def modules_variable(settings) -> str:
    """TASKS_KINDS_PACKAGES: every module the settings name (the entry points are loaded besides);
    empty: the entry points alone (never the services' default, which names the demo kinds)."""
    return ",".join(dict.fromkeys(m for package in settings.app.kinds_packages for m in package.modules))


def checkout_problems(settings, repo: Path) -> list[tuple[str, str, str]]:
    """Each package buildable from this checkout, and each telling the platform its kinds: by
    ``modules`` or by an entry point in ``taskplatform.kinds`` (a requirement's cannot be read
    before it is fetched: the API and workers then stop at start, naming it, if it has none)."""
    found = image_packages.problems(repo, packages(settings), KEY)
    if found:
        return found
    for n, package in enumerate(settings.app.kinds_packages):
        points = image_packages.entry_points(repo, package)
        if package.modules or points is None or points.get(ENTRY_POINT_GROUP):
            continue
        source = "path" if package.path is not None else "wheel"
        found.append((f"{KEY}.{n}.{source}", f"{package.shown} names no entry point in the group "
                      f"{ENTRY_POINT_GROUP!r} and the settings name none of its modules: no kind of it would load",
                      f"add to its pyproject.toml [project.entry-points.\"{ENTRY_POINT_GROUP}\"] "
                      f"<name> = \"<module>\", or set {KEY}.{n}.modules to the modules declaring its kinds"))
    return found
