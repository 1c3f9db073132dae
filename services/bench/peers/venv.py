"""The peers' own virtualenv: Celery, arq and RQ from PyPI at the versions
``peers-requirements.txt`` pins, kept apart from the project's (they pin a redis-py the project
does not use). Made once and reused while the pins and the Python are the same; made anew when
either changed."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

STAMP = ".bench-peers-installed"  # in the venv: what it was made from (``stamp``)


def stamp(requirements: str, python_version: str) -> str:
    """What a venv made from ``requirements`` with that Python is known by."""
    return hashlib.sha256(f"{python_version}\n{requirements}".encode()).hexdigest()


def ensure(venv: Path, requirements_file: Path) -> Path:
    """The venv's python, the venv made (or made anew) first when its stamp differs."""
    venv = venv.absolute()  # its python is run from other working directories
    wanted = stamp(requirements_file.read_text(), sys.version)
    python = venv / "bin" / "python"
    stamp_file = venv / STAMP
    if python.exists() and stamp_file.exists() and stamp_file.read_text().strip() == wanted:
        return python
    print(f"bench-peers: installing the peers ({requirements_file.name}) into {venv}", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                "-r", str(requirements_file)], capture_output=True, text=True)
    if installed.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)  # half a venv would pass for one next time
        sys.exit(f"bench-peers: pip could not install {requirements_file}:\n{installed.stdout}{installed.stderr}"
                 f"\nfix: check that PyPI is reachable and that the pins resolve together")
    stamp_file.write_text(wanted + "\n")
    return python
