"""One pyinfra operation for a project's files: rendered config and secret files, checked in
one fact call and changed only where they differ.

Why not ``files.put``/``files.directory`` per file: each costs a fact round trip (a no-op
rollout must stay under 3 s), and they compare owners by *name* — secret files belong to
container uids (999, 10001) with no account on the host, so they would be re-chowned on every
run. Here owners are numeric, content is compared by sha256, and content is never printed:
uploads come from in-memory buffers and operation names carry paths only.

What differs goes to the host as one tar archive (owners, modes and contents in its headers),
uploaded into a root-only directory and extracted there with owners and modes kept: one upload
and one command however many files changed, instead of an upload, a chown and a chmod per file
(a first deploy over SSH ships ~150 paths a host: ~20 s one by one, on the test hosts).

The project directory is Shipyard's alone: what a new render no longer has (a removed
replica's secret copies, a file that moved) is deleted, so the host holds exactly the render.
"""

from __future__ import annotations

import hashlib
import io
import shlex
import tarfile
from dataclasses import dataclass

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, StringCommand, operation
from pyinfra.api.exceptions import OperationError

from shipyard.apply import converge, remote
from shipyard.commands import to_shell


@dataclass(frozen=True)
class WantedPath:
    path: str
    uid: int
    mode: str  # octal as stat prints it: "644", "400", "700"
    content: bytes | None = None  # None: a directory
    # A file that is the host's once it exists (an append-only log): made empty when missing,
    # only its owner and mode kept as wanted, its content never compared or replaced.
    keep_content: bool = False


@dataclass(frozen=True)
class PathRead:
    """What PathStates read: path → (uid, gid, mode, sha256 or 'dir'), and the output of the
    command run after it in the same round trip (None when none was asked for)."""

    states: dict[str, tuple]
    then: str | None = None


class PathStates(FactBase):
    """path → (uid, gid, mode, sha256 or 'dir') for every given path that exists, and for
    everything below each of ``roots``: two finds and one sha256sum, whatever the number of
    paths (a shell loop of stat and sha256sum per path spent ~1 s a host on a no-op deploy).
    ``then``: one more command, whose output comes back with them (one round trip)."""

    _DIGESTS = "--- shipyard: digests ---"
    _THEN = "--- shipyard: then ---"

    def command(self, paths: tuple[str, ...], roots: tuple[str, ...], then: str = "") -> str:
        quoted, top = " ".join(shlex.quote(p) for p in paths), " ".join(shlex.quote(r) for r in roots)
        listed = (f"{{ find {quoted} -maxdepth 0 -printf '%U %G %m %y %p\\n'; "
                  f"find {top} -mindepth 1 -printf '%U %G %m %y %p\\n'; }} 2>/dev/null")
        digests = (f"{{ find {quoted} -maxdepth 0 -type f -print0; find {top} -mindepth 1 -type f -print0; }} "
                   "2>/dev/null | xargs -0 -r sha256sum")
        return f"{listed}; echo '{self._DIGESTS}'; {digests}" + (f"; echo '{self._THEN}'; {then}" if then else "")

    @staticmethod
    def default():
        return PathRead({})  # nothing exists yet: pyinfra gives the default instead of processing no output

    def process(self, output):
        listed, digests, into_digests, then = {}, {}, False, None
        for line in output:
            if then is not None:
                then.append(line)
            elif line == self._THEN:
                then = []
            elif line == self._DIGESTS:
                into_digests = True
            elif into_digests:
                digest, _, path = line.partition("  ")
                digests[path] = digest
            elif line.strip():
                uid, gid, mode, kind, path = line.split(" ", 4)
                if kind in ("d", "f"):  # what else is there (a link, a socket) is not the render's
                    listed[path] = (int(uid), int(gid), mode, "dir" if kind == "d" else "")
        return PathRead({path: state[:3] + (digests.get(path, "") if state[3] != "dir" else "dir",)
                         for path, state in listed.items()}, None if then is None else "\n".join(then))


def leftover_paths(existing: set[str], wanted: set[str], root: str) -> list[str]:
    """What exists below ``root`` but is not wanted, top-most only (removing a directory
    removes what is in it)."""
    extra = {p for p in existing if p.startswith(root.rstrip("/") + "/") and p not in wanted}
    return sorted(p for p in extra if not any(p.startswith(other + "/") for other in extra))


INCOMING = ".incoming"  # below the project's root, root-only, removed once extracted


def archive(items: list[WantedPath]) -> bytes:
    """A tar of ``items`` (directories and files, parents first) by their paths below ``/``,
    each with its uid and gid (the same number), its mode and its content: extracted as root
    with ``--same-owner --same-permissions --numeric-owner`` they are as wanted. Deterministic:
    no timestamps, no owner names."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for item in items:
            info = tarfile.TarInfo(item.path.lstrip("/"))
            info.uid = info.gid = item.uid
            info.mode = int(item.mode, 8)
            if item.content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(item.content)
                tar.addfile(info, io.BytesIO(item.content))
    return buffer.getvalue()


def extract_argv(tar_path: str) -> list[str]:
    # Over an existing file tar writes a new one in its place (it unlinks it first); a
    # directory's owner and mode are set once what is in it is written.
    return ["tar", "-x", "-f", tar_path, "-C", "/", "--same-owner", "--same-permissions", "--numeric-owner"]


def private_upload(content: bytes, directory: str, path: str):
    """An operation's commands that make ``directory`` anew, mode 0700, and upload ``content`` to
    ``path`` in it. Through sudo the directory is the SSH user's, whose sftp writes the file
    straight into it: pyinfra's own way under sudo passes through a file in /tmp that every user
    of the host can read until it is moved."""
    # sudo names the user it was run by (also when the inventory leaves ssh_user to the client).
    user = '-o "$SUDO_USER" ' if remote.through_sudo() else ""
    yield StringCommand(to_shell(["rm", "-rf", directory]), "&&", f"install -d -m 700 {user}{shlex.quote(directory)}")
    yield FileUploadCommand(io.BytesIO(content), path, _sudo=False)


def path_changes(states: dict[str, tuple], wanted: list[WantedPath], roots: tuple[str, ...]
                 ) -> tuple[list[str], list[WantedPath], list[WantedPath]]:
    """What makes the host's paths (``states``: PathStates) as wanted: the leftovers below
    ``roots`` to remove, the items to write (missing, or other content), the items whose owner
    or mode only is to set."""
    leftovers = sorted({path for root in roots for path in leftover_paths(set(states), {w.path for w in wanted}, root)})
    written: list[WantedPath] = []
    owned: list[WantedPath] = []
    for item in wanted:
        state = states.get(item.path)
        if state is None:
            written.append(WantedPath(item.path, item.uid, item.mode, b"") if item.keep_content else item)
        elif (item.content is not None and not item.keep_content
              and state[3] != hashlib.sha256(item.content).hexdigest()):
            written.append(item)
        elif state[:3] != (item.uid, item.uid, item.mode):
            owned.append(item)
    return leftovers, written, owned


@operation()
def project_paths(roots: tuple[str, ...], wanted: list[WantedPath], then_read: tuple[str, str, tuple[str, ...]] = ()):
    """Directories and files as wanted, in the given order (parents before children); anything
    else below each of ``roots`` is removed. One read and at most one archive for all of them.
    ``then_read``: (project dir, compose project, image refs) of a compose project these paths
    hold, read in the same round trip and kept for the deploy's converges when the paths were
    as wanted (shipyard.apply.converge.remember_read): a no-op deploy reads each host once."""
    then = converge.project_read_command(*then_read) if then_read else ""
    read = host.get_fact(PathStates, paths=tuple(w.path for w in wanted), roots=tuple(roots), then=then)
    leftovers, written, owned = path_changes(read.states, wanted, roots)
    if leftovers or written or owned:
        converge.forget_read(host.name)  # the project changes: what was read of it no longer holds
    elif then_read and read.then is not None:
        try:
            converge.remember_read(host.name, converge.parse_project_read(read.then, then_read[0], then_read[1]))
        except OperationError:
            pass  # the project does not answer as it is: the converge's own read says why
    if leftovers:
        yield StringCommand("rm", "-rf", *(shlex.quote(path) for path in leftovers))
    if written:
        incoming = f"{roots[0].rstrip('/')}/{INCOMING}"
        tar_path = f"{incoming}/paths.tar"
        yield from private_upload(archive(written), incoming, tar_path)
        yield StringCommand(*(shlex.quote(a) for a in extract_argv(tar_path)), "&&", "rm", "-rf", shlex.quote(incoming))
    for item in owned:
        yield StringCommand("chown", f"{item.uid}:{item.uid}", shlex.quote(item.path), "&&",
                            "chmod", item.mode, shlex.quote(item.path))
    if not (leftovers or written or owned):
        host.noop(f"{len(wanted)} paths are current")
