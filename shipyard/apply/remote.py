"""Commands and uploads that a ``python.call`` runs on the current host itself, as root.

pyinfra's operations and facts take the inventory's ``_sudo`` from the host data; the low-level
``host.run_shell_command``/``host.put_file`` do not, so every direct call goes through here.
With ``_sudo`` (a non-root SSH user with passwordless sudo) an upload first lands as that user
in a fresh ``mktemp -d`` directory (0700: no other user of the host reads a secret in passing),
then root copies it into place; pyinfra's own default, a file in ``/tmp``, would be readable by
every user of the host until it is moved.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from pyinfra import host
from pyinfra.api.exceptions import OperationError

from shipyard import commands


def through_sudo() -> bool:
    """Whether the inventory has this host's commands run through sudo (``_sudo`` host data)."""
    return bool(host.data.get("_sudo"))


def root_arguments() -> dict:
    """The connector arguments that make a direct call run as root on this host."""
    return {"_sudo": True} if through_sudo() else {}


def run(argv: Sequence[str]):
    """``argv`` on the host as root: (ok, pyinfra's CommandOutput)."""
    return host.run_shell_command(commands.to_shell(argv), **root_arguments())


def run_shell(command: str):
    """A shell command line (shipyard.commands.parallel's) on the host as root."""
    return host.run_shell_command(command, **root_arguments())


def put_private(content: bytes, dest: str) -> None:
    """``content`` written to ``dest`` (a file in a directory only root, or the service, reads)."""
    if not through_sudo():
        if not host.put_file(io.BytesIO(content), dest, print_output=False, print_input=False):
            raise OperationError(f"host {host.name}: writing {dest} failed")
        return
    ok, made = host.run_shell_command("mktemp -d")  # as the SSH user: its own 0700 directory
    staging = made.stdout.strip()
    if not ok or not staging.startswith("/"):
        raise OperationError(f"host {host.name}: `mktemp -d` as {host.data.get('ssh_user')} failed: {made.stderr}")
    try:
        if not host.put_file(io.BytesIO(content), dest, remote_temp_filename=f"{staging}/upload", print_output=False,
                             print_input=False, _sudo=True):
            raise OperationError(f"host {host.name}: writing {dest} failed")
    finally:
        host.run_shell_command(commands.to_shell(["rm", "-rf", staging]))
