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

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, operation
from pyinfra.api.exceptions import OperationError


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


class LockHolder(FactBase):
    def command(self, path: str) -> str:
        return f"cat {shlex.quote(path)} 2>/dev/null || true"

    @staticmethod
    def default():
        return ""

    def process(self, output):
        return "\n".join(output).strip()


@operation()
def host_lock(path: str, owner: str):
    holder = host.get_fact(LockHolder, path=path)
    if holder and holder != owner and not stale(holder, socket.gethostname()):
        print(f"host {host.name}: another deploy holds the environment's lock ({holder}); nothing was changed.\n"
              f"fix: wait for it to finish; if no deploy runs there any more, remove {path} on {host.name}",
              flush=True)
        raise OperationError(f"host {host.name}: environment locked by another deploy (report above)")
    # noclobber makes the create atomic: of two deploys racing past the fact, one fails here.
    yield StringCommand("mkdir", "-p", shlex.quote(os.path.dirname(path)), "&&",
                        *(["rm", "-f", shlex.quote(path), "&&"] if holder else []),
                        "(", "set", "-C;", "printf", "'%s\\n'", shlex.quote(owner), ">", shlex.quote(path), ")")


@operation()
def host_unlock(path: str, owner: str):
    # Only our own lock: a lock someone took over meanwhile stays theirs.
    yield StringCommand("if", "[", f'"$(cat {shlex.quote(path)} 2>/dev/null)"', "=", shlex.quote(owner), "];",
                        "then", "rm", "-f", shlex.quote(path) + ";", "fi")
