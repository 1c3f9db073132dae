"""A pyinfra operation for files owned by a numeric uid that has no name on the host.

Secret files belong to container uids (999 for postgres/redis, 10001 for the task platform)
that usually have no account on the host. pyinfra's ``files.put``/``files.directory`` compare
owners by *name* (``stat %U`` prints UNKNOWN for such uids) and so re-chown on every run; this
operation compares numeric uid/gid/mode and the content hash, and does nothing when all match.
Content is never printed: the upload source is an in-memory buffer.
"""

from __future__ import annotations

import hashlib
import io
import shlex

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, StringCommand, operation
from pyinfra.facts.files import Sha256File


class NumericOwnership(FactBase):
    """(uid, gid, octal mode) of a path, or None when it does not exist."""

    def command(self, path: str) -> str:
        return f"stat -c '%u %g %a' {shlex.quote(path)} 2>/dev/null || true"

    def process(self, output):
        line = " ".join(output).split()
        return (int(line[0]), int(line[1]), line[2]) if len(line) == 3 else None


def _ensure_ownership(path: str, uid: int, mode: str, is_new: bool):
    if is_new or host.get_fact(NumericOwnership, path=path) != (uid, uid, mode):
        yield StringCommand("chown", f"{uid}:{uid}", shlex.quote(path))
        yield StringCommand("chmod", mode, shlex.quote(path))
        return True
    return False


@operation()
def private_directory(path: str, uid: int, mode: str = "500"):
    exists = host.get_fact(NumericOwnership, path=path) is not None
    if not exists:
        yield StringCommand("mkdir", "-p", shlex.quote(path))
    changed = yield from _ensure_ownership(path, uid, mode, not exists)
    if exists and not changed:
        host.noop(f"directory {path} is present with uid {uid} mode {mode}")


@operation()
def private_file(content: bytes, dest: str, uid: int, mode: str = "400"):
    current = host.get_fact(Sha256File, path=dest)
    if current != hashlib.sha256(content).hexdigest():
        yield FileUploadCommand(io.BytesIO(content), dest)
        yield from _ensure_ownership(dest, uid, mode, True)
        return
    changed = yield from _ensure_ownership(dest, uid, mode, False)
    if not changed:
        host.noop(f"file {dest} is current (uid {uid}, mode {mode})")
