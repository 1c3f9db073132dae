"""Read an environment's pyinfra inventory file into typed settings.

An inventory is plain pyinfra Python: module-level lists are host groups, each host a
string or ``(host, data)`` tuple. Shipyard adds one module-level dict, ``SHIPYARD``, with the
environment's settings (see ``shipyard.settings.EnvironmentSettings``). Group names are the
roles a host plays: ``edge``, ``app``, ``data``, ``cache``, ``control``, ``observability`` and
``registry`` (the image registry's host, when ``registry.enabled``). ``cache`` (an in-memory
store's nodes) left out is the ``data`` hosts (``settings.ROLE_DEFAULTS``).

Host data keys Shipyard reads: ``shipyard_host`` (logical name; default derived from the
host string) and ``address`` (how other hosts reach this one; default the host string).
Other keys (``ssh_user``, ``ssh_port``, ...) are pyinfra's own.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from shipyard import topology
from shipyard.components import COMPONENTS
from shipyard.errors import SettingsError, ShipyardError
from shipyard.settings import EnvironmentSettings, HostSettings, load_settings

# Host groups: a component places each service on one of them (shipyard.component.Service.group).
ROLES = ("edge", "app", "data", "cache", "control", "observability", "registry")
HOST_DATA_KEYS = {"shipyard_host", "address"}
PYINFRA_HOST_DATA_KEYS = {"ssh_user", "ssh_port", "ssh_key", "ssh_hostname", "ssh_known_hosts_file",
                          "ssh_strict_host_key_checking", "_sudo", "_use_sudo_password"}


def inventory_path(repo: Path, env: str) -> Path:
    return repo / "inventories" / f"{env}.py"


def list_environments(repo: Path) -> list[str]:
    return sorted(p.stem for p in (repo / "inventories").glob("*.py") if not p.stem.startswith("_"))


def _exec_inventory(path: Path) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__file__": str(path)}
    try:
        code = compile(path.read_text(), str(path), "exec")
        exec(code, namespace)  # noqa: S102 — inventories are trusted Python, as in pyinfra
    except FileNotFoundError:
        raise SettingsError([ShipyardError(str(path), "no such inventory",
                                           "pick an environment from inventories/*.py (ENV=local|ci|production)")]) from None
    except SyntaxError as exc:
        raise SettingsError([ShipyardError(f"{path}:{exc.lineno}", f"Python syntax error: {exc.msg}",
                                           "fix the syntax on that line")]) from None
    return namespace


def _becoming_root(shown: str, connect: str, host_data: dict[str, Any]) -> list[ShipyardError]:
    """A deploy changes what only root may (the engine's packages, /etc/docker, the project's
    root-owned files): an SSH user other than root needs ``_sudo``, and passwordless, since no
    command of a deploy waits on a person."""
    user = host_data.get("ssh_user")
    if host_data.get("_use_sudo_password"):
        return [ShipyardError(f"{shown}: host {connect}: data._use_sudo_password", "a sudo password is not supported: "
                              "the deploy's and the controller's commands run `sudo -n` and never prompt",
                              f"give {user or 'the SSH user'} passwordless sudo on the host "
                              f"(a sudoers line '{user or '<user>'} ALL=(ALL) NOPASSWD: ALL') and drop _use_sudo_password")]
    if connect != "@local" and user not in (None, "root") and not host_data.get("_sudo"):
        return [ShipyardError(f"{shown}: host {connect}: data.ssh_user", f"{user!r} is not root and _sudo is not set: "
                              "the deploy installs the engine and writes root's files",
                              f"add '_sudo': True to the host's data (with passwordless sudo for {user}), "
                              "or connect as root")]
    return []


def _default_name(connect: str) -> str:
    if connect == "@local":
        return "local"
    return re.sub(r"[^a-z0-9-]", "-", connect.split(".")[0].lower()).strip("-")[:31] or "host"


def _port_clash_error(clash: topology.PortClash, shown: str, environ: dict[str, str]) -> ShipyardError:
    variables = [f"SHIPYARD_PORTS__{key.upper()}" for key in clash.settings if f"SHIPYARD_PORTS__{key.upper()}" in environ]
    where = f"environment variable {', '.join(variables)}" if variables else f"{shown}: SHIPYARD.ports"
    if clash.fix:
        return ShipyardError(f"{shown}: host {clash.host}", clash.what, clash.fix)
    return ShipyardError(f"{where} (host {clash.host}, port {clash.port})", clash.what,
                         "give one of them a free port: " + " or ".join(f"ports.{k}" for k in dict.fromkeys(clash.settings)))


def load_environment(repo: Path, env: str, environ: dict[str, str] | None = None) -> EnvironmentSettings:
    """Load and validate one environment: the only entry point for settings."""
    path = inventory_path(repo, env)
    shown = str(path.relative_to(repo)) if path.is_relative_to(repo) else str(path)
    namespace = _exec_inventory(path)
    data = namespace.get("SHIPYARD")
    if not isinstance(data, dict):
        raise SettingsError([ShipyardError(f"{shown}: SHIPYARD", "missing or not a dict",
                                           "define SHIPYARD = {'name': '<env>', ...} at module level")])
    problems: list[ShipyardError] = []
    roles_by_host: dict[str, list[str]] = {}
    data_by_host: dict[str, dict[str, Any]] = {}
    positions_by_host: dict[str, list[tuple[str, int]]] = {}
    for group, members in namespace.items():
        if group.startswith("_") or not isinstance(members, (list, tuple)):
            continue
        hosts = members[0] if isinstance(members, tuple) else members
        if group not in ROLES:
            problems.append(ShipyardError(f"{shown}: group '{group}'", "unknown group",
                                          f"use one of {', '.join(ROLES)} (or prefix a helper variable with '_')"))
            continue
        for position, entry in enumerate(hosts):
            connect, host_data = (entry if isinstance(entry, tuple) else (entry, {}))
            roles_by_host.setdefault(connect, []).append(group)
            positions_by_host.setdefault(connect, []).append((group, position))
            merged = data_by_host.setdefault(connect, {})
            for key, value in host_data.items():
                if key not in HOST_DATA_KEYS | PYINFRA_HOST_DATA_KEYS:
                    problems.append(ShipyardError(f"{shown}: host {connect}: data.{key}", "unknown host data key",
                                                  f"use one of {', '.join(sorted(HOST_DATA_KEYS | PYINFRA_HOST_DATA_KEYS))}"))
                merged[key] = value
    if problems:
        raise SettingsError(problems)
    hosts = []
    for connect, roles in roles_by_host.items():
        host_data = data_by_host[connect]
        try:
            hosts.append(HostSettings(name=host_data.get("shipyard_host", _default_name(connect)), connect=connect,
                                      address=host_data.get("address", "127.0.0.1" if connect == "@local" else connect),
                                      roles=tuple(r for r in ROLES if r in roles),
                                      group_positions=tuple(positions_by_host[connect]),
                                      ssh_user=host_data.get("ssh_user"), ssh_port=host_data.get("ssh_port"),
                                      ssh_key=host_data.get("ssh_key"),
                                      ssh_known_hosts_file=host_data.get("ssh_known_hosts_file"),
                                      sudo=bool(host_data.get("_sudo", False))))
        except Exception as exc:  # pydantic error on host data: name it
            problems.append(ShipyardError(f"{shown}: host {connect}", str(exc).splitlines()[-1].strip(),
                                          "set shipyard_host to a lower-case name like 'app-1'"))
            continue
        problems += _becoming_root(shown, connect, host_data)
    if problems:
        raise SettingsError(problems)
    environ = dict(os.environ) if environ is None else environ
    settings = load_settings(data, hosts, shown, environ)
    # What the settings name in the checkout (a kinds package's directory): before any host too.
    # Relative paths are the inventory's checkout's (its inventories/ may be a link to it).
    checkout = path.resolve().parent.parent
    found = [ShipyardError(f"{shown}: SHIPYARD.{key}", what, fix) for comp in COMPONENTS if comp.checkout_problems
             for key, what, fix in comp.checkout_problems(settings, checkout)]
    if found:
        raise SettingsError(found)
    clashes = topology.build(settings).port_collisions()
    if clashes:
        raise SettingsError([_port_clash_error(clash, shown, environ) for clash in clashes])
    if settings.name != env:
        raise SettingsError([ShipyardError(f"{shown}: SHIPYARD.name", f"is {settings.name!r} but the file is {env}.py",
                                           f"set name to {env!r} (the file name is the environment name)")])
    return settings
