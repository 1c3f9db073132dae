"""One pyinfra operation for a project's files: rendered config and secret files, checked in
one fact call and changed only where they differ.

Why not ``files.put``/``files.directory`` per file: each costs a fact round trip (a no-op
rollout must stay under 3 s), and they compare owners by *name* — secret files belong to
container uids (999, 10001) with no account on the host, so they would be re-chowned on every
run. Here owners are numeric, content is compared by sha256, and content is never printed:
uploads come from in-memory buffers and operation names carry paths only.

The project directory is Shipyard's alone: what a new render no longer has (a removed
replica's secret copies, a file that moved) is deleted, so the host holds exactly the render.
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
    """path → (uid, gid, mode, sha256 or 'dir') for every given path that exists, and for
    everything below ``root``."""

    def command(self, paths: tuple[str, ...], root: str) -> str:
        quoted = " ".join(shlex.quote(p) for p in paths)
        return (f"for p in {quoted} $(find {shlex.quote(root)} -mindepth 1 2>/dev/null); do "
                "if [ -d \"$p\" ]; then s=dir; "
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


def leftover_paths(existing: set[str], wanted: set[str], root: str) -> list[str]:
    """What exists below ``root`` but is not wanted, top-most only (removing a directory
    removes what is in it)."""
    extra = {p for p in existing if p.startswith(root.rstrip("/") + "/") and p not in wanted}
    return sorted(p for p in extra if not any(p.startswith(other + "/") for other in extra))


def _ownership(path: str, uid: int, mode: str):
    yield StringCommand("chown", f"{uid}:{uid}", shlex.quote(path))
    yield StringCommand("chmod", mode, shlex.quote(path))


@operation()
def project_paths(root: str, wanted: list[WantedPath]):
    """Directories and files as wanted, in the given order (parents before children); anything
    else below ``root`` is removed."""
    states = host.get_fact(PathStates, paths=tuple(w.path for w in wanted), root=root)
    changed = []
    for path in leftover_paths(set(states), {w.path for w in wanted}, root):
        yield StringCommand("rm", "-rf", shlex.quote(path))
        changed.append(path)
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
