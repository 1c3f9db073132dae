"""One pyinfra operation for a project's files: rendered config and secret files, checked in
one fact call and changed only where they differ.

Why not ``files.put``/``files.directory`` per file: each costs a fact round trip (a no-op
rollout must stay under 3 s), and they compare owners by *name* — secret files belong to
container uids (999, 10001) with no account on the host, so they would be re-chowned on every
run. Here owners are numeric, content is compared by sha256, and content is never printed:
uploads come from in-memory buffers and operation names carry paths only.
"""

from __future__ import annotations

import hashlib
import io
import shlex
from dataclasses import dataclass

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, StringCommand, operation


@dataclass(frozen=True)
class WantedPath:
    path: str
    uid: int
    mode: str  # octal as stat prints it: "644", "400", "700"
    content: bytes | None = None  # None: a directory


class PathStates(FactBase):
    """path → (uid, gid, mode, sha256 or 'dir') for every given path that exists."""

    def command(self, paths: tuple[str, ...]) -> str:
        quoted = " ".join(shlex.quote(p) for p in paths)
        return (f"for p in {quoted}; do if [ -d \"$p\" ]; then s=dir; "
                "elif [ -f \"$p\" ]; then s=$(sha256sum \"$p\" | cut -d' ' -f1); else continue; fi; "
                "printf '%s %s %s\\n' \"$(stat -c '%u %g %a' \"$p\")\" \"$s\" \"$p\"; done")

    @staticmethod
    def default():
        return {}  # nothing exists yet: pyinfra gives the default instead of processing no output

    def process(self, output):
        states = {}
        for line in output:
            uid, gid, mode, digest, path = line.split(" ", 4)
            states[path] = (int(uid), int(gid), mode, digest)
        return states


def _ownership(path: str, uid: int, mode: str):
    yield StringCommand("chown", f"{uid}:{uid}", shlex.quote(path))
    yield StringCommand("chmod", mode, shlex.quote(path))


@operation()
def project_paths(wanted: list[WantedPath]):
    """Directories and files as wanted, in the given order (parents before children)."""
    states = host.get_fact(PathStates, paths=tuple(w.path for w in wanted))
    changed = []
    for item in wanted:
        state = states.get(item.path)
        if item.content is None:
            if state is None:
                yield StringCommand("mkdir", "-p", shlex.quote(item.path))
            if state is None or state[:3] != (item.uid, item.uid, item.mode):
                yield from _ownership(item.path, item.uid, item.mode)
                changed.append(item.path)
            continue
        digest = hashlib.sha256(item.content).hexdigest()
        if state is None or state[3] != digest:
            yield FileUploadCommand(io.BytesIO(item.content), item.path)
            yield from _ownership(item.path, item.uid, item.mode)
            changed.append(item.path)
        elif state[:3] != (item.uid, item.uid, item.mode):
            yield from _ownership(item.path, item.uid, item.mode)
            changed.append(item.path)
    if not changed:
        host.noop(f"{len(wanted)} paths are current")
