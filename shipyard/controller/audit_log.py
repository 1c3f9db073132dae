"""The audit trail's side effects (the events themselves: shipyard.audit): who runs a command and
from which commit, appending its event to ``<deploy_root>/.<env>.audit.log`` on each host of the
environment, and reading them back for `make audit`.

Written as the release's history is (``HostControl.append_file``): ``@local`` hosts directly, SSH
hosts by one ``sh -c 'cat >> file'`` fed the line on stdin, so the line is never part of a
command line. A host that cannot be written is reported and skipped: the
audit never turns a command's result into another one."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shipyard import audit
from shipyard.audit import AuditEvent, Checkout
from shipyard.controller.hosts import HostControl, HostView, one_per_machine
from shipyard.errors import ShipyardError
from shipyard.settings import EnvironmentSettings


def who() -> tuple[str, str]:
    """(user, machine). Under sudo, the operator who ran sudo, not root."""
    try:
        user = os.environ.get("SUDO_USER") or getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a bare container)
        user = f"uid {os.getuid()}"
    return user, socket.gethostname()


def checkout(repo: Path) -> Checkout:
    """The commit HEAD names and whether anything differs from it (untracked files too: a new
    template changes a deploy as much as an edited one)."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=30, check=False)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return Checkout(commit="", dirty=False)
        return Checkout(commit=head.stdout.strip(), dirty=bool(git("status", "--porcelain").stdout.strip()))
    except (OSError, subprocess.TimeoutExpired):  # no git on this machine: the event says "(no git)"
        return Checkout(commit="", dirty=False)


def record(settings: EnvironmentSettings, event: AuditEvent, hosts: tuple | None = None) -> list[str]:
    """Append ``event`` on every host of the environment (``hosts``: those a deploy's LIMIT
    names); the hosts written."""
    path = audit.audit_log_path(settings.deploy_root, settings.name)
    line = audit.to_line(event)

    def append(host) -> str | None:
        try:
            HostControl(settings, host).append_file(path, line.encode(), audit.LOG_MODE)
        except (OSError, ShipyardError) as exc:
            return (f"shipyard: warning: host {host.name} ({host.connect}): the audit event of `{event.command}` was "
                    f"not written to {path}: {exc}; fix: check that this machine may write there (root, ssh)")
        return None

    # Every host at once: each is an SSH connection of its own (a handshake each, ~0.3 s here).
    targets = one_per_machine(settings.hosts if hosts is None else hosts)
    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        failures = list(pool.map(append, targets))
    for failure in failures:
        if failure:
            print(failure, file=sys.stderr)
    return [host.name for host, failure in zip(targets, failures) if failure is None]


def read(settings: EnvironmentSettings) -> tuple[list[AuditEvent], list[str]]:
    """Every host's events merged (each event once, in time order), and what could not be read."""
    path = audit.audit_log_path(settings.deploy_root, settings.name)
    per_host, problems = [], []
    for host in settings.hosts:
        raw = HostView(settings, host).read_path(path)
        if raw is None:
            problems.append(f"host {host.name}: no audit log at {path} (nothing recorded there yet, or unreadable)")
            continue
        events, bad = audit.parse_lines(raw.decode(errors="replace"), f"host {host.name}: {path}")
        per_host.append(events)
        problems += bad
    return audit.merge(per_host), problems
