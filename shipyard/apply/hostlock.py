"""The environment's lock on each host: one deploy at a time, whichever machine runs it.

The controller's flock (shipyard.lock) serialises deploys from one machine; two machines
deploying the same environment meet here instead. The lock is a file created with noclobber
(atomic) at ``<deploy_root>/.locks/<env>``, holding who took it: controller, pid, checkout.
The last operation of a deploy removes it. A deploy that died or failed leaves it behind; the
next deploy from the same controller sees that pid gone and takes it over, a deploy from
another controller stops and says who holds it and how to clear it.
"""

from __future__ import annotations

import os
import shlex
import socket
from collections.abc import Callable

from pyinfra import host
from pyinfra.api import StringCommand, operation
from pyinfra.api.exceptions import OperationError
from pyinfra.operations import python

from shipyard.apply import remote


def lock_file(deploy_root: str, env: str) -> str:
    return f"{deploy_root.rstrip('/')}/.locks/{env}"


def owner_line(checkout: str) -> str:
    """Who takes the lock: this controller and the deploy process (the cli, which outlives pyinfra)."""
    return f"controller {socket.gethostname()} pid {os.getppid()} checkout {checkout}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale(holder: str, controller: str) -> bool:
    """A lock left by a deploy of this controller whose process is gone."""
    words = holder.split()
    if len(words) < 4 or words[0] != "controller" or words[2] != "pid" or words[1] != controller:
        return False
    return not _pid_alive(int(words[3]))


TAKEN = "--- shipyard: lock taken ---"


def take_script(path: str, owner: str, replace: bool = False, then: str = "") -> str:
    """One command that takes the lock (noclobber makes the create atomic: of two deploys, one
    wins) and prints TAKEN, or prints who holds it. ``replace``: the holder's file removed first
    (a lock of our own, or one its dead deploy left). ``then``: run once the lock is taken, its
    output after TAKEN's line."""
    create = f"( set -C; printf '%s\\n' {shlex.quote(owner)} > {shlex.quote(path)} ) 2>/dev/null"
    remove = f"rm -f {shlex.quote(path)} && " if replace else ""
    return (f"mkdir -p {shlex.quote(os.path.dirname(path))} && {remove}if {create}; then echo '{TAKEN}'; "
            f"{'{ ' + then + '; } || true; ' if then else ''}else cat {shlex.quote(path)} 2>/dev/null; fi")


def _refused(path: str, holder: str) -> OperationError:
    print(f"host {host.name}: another deploy holds the environment's lock ({holder}); nothing was changed.\n"
          f"fix: wait for it to finish; if no deploy runs there any more, remove {path} on {host.name}",
          flush=True)
    return OperationError(f"host {host.name}: environment locked by another deploy (report above)")


def take_lock(path: str, owner: str, then: str = "", keep: Callable[[str, list[str]], None] | None = None,
              meanwhile: Callable[[], None] | None = None) -> None:
    """pyinfra python.call: the lock taken in one round trip when it is free (a second when its
    holder is this deploy or a dead deploy of this controller). ``then``: a read to run in the
    same round trip once the lock is taken (the guards': shipyard.apply.guard), its output lines
    given to ``keep`` with the host's name. ``meanwhile``: started on the deploying machine just
    before, to go on while the round trip waits (shipyard.apply.rollout.load_ahead)."""
    if meanwhile is not None:
        meanwhile()
    for replace in (False, True):
        ok, output = remote.run_shell(take_script(path, owner, replace, then))
        lines = list(output.stdout_lines)
        if not ok:
            raise OperationError(f"host {host.name}: taking the environment's lock {path} failed: {output.stderr}")
        if lines and lines[0].strip() == TAKEN:
            if keep is not None:
                keep(host.name, lines[1:])
            return
        holder = "\n".join(lines).strip()
        if replace or (holder != owner and not stale(holder, socket.gethostname())):
            raise _refused(path, holder)


def host_lock(name: str, path: str, owner: str, then: str = "",
              keep: Callable[[str, list[str]], None] | None = None, meanwhile: Callable[[], None] | None = None) -> None:
    python.call(name=name, function=take_lock, path=path, owner=owner, then=then, keep=keep, meanwhile=meanwhile)


@operation()
def host_unlock(path: str, owner: str, first: str = ""):
    """The lock released — only our own: a lock someone took over meanwhile stays theirs.
    ``first``: a command run before, in the same round trip; the lock stays when it fails (the
    deploy failed: the next one from here takes it over)."""
    yield StringCommand(release_script(path, owner, first))


def release_script(path: str, owner: str, first: str = "") -> str:
    release = (f'if [ "$(cat {shlex.quote(path)} 2>/dev/null)" = {shlex.quote(owner)} ]; '
               f"then rm -f {shlex.quote(path)}; fi")
    return f"{{ {first}; }} && {release}" if first else release
