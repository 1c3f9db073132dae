"""Kernel settings the hosts must have for the services they run (``Service.host_sysctls``):
which host needs which key at least, and the file that keeps them across reboots. Pure: the
apply layer (shipyard/apply/sysctl.py) reads the host's values and raises what is lower; `make
plan` prints what each host needs. No component is named here.

A value is a *minimum*: a host that has more keeps it (another service of the host may need
more), and nothing is ever lowered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shipyard import topology
from shipyard.errors import ShipyardError
from shipyard.settings import EnvironmentSettings, HostSettings

_KEY = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_-]+)+$")


@dataclass(frozen=True)
class Needed:
    key: str
    minimum: int
    needed_by: tuple[str, ...]  # instance names
    why: str


def needed(settings: EnvironmentSettings, host: HostSettings) -> tuple[Needed, ...]:
    """Every kernel setting ``host`` needs, the highest minimum of its instances, by key."""
    found: dict[str, Needed] = {}
    for inst in topology.build(settings).instances_on(host):
        if inst.service.host_sysctls is None:
            continue
        for want in inst.service.host_sysctls(settings):
            if not _KEY.match(want.key) or want.minimum < 0:
                raise ShipyardError(f"shipyard/components/{inst.component.name}/__init__.py, service {inst.service.name}",
                                    f"host sysctl {want.key}={want.minimum} is not a kernel setting and a "
                                    "non-negative number", "name a key as sysctl -a prints it, with a minimum >= 0")
            had = found.get(want.key)
            found[want.key] = Needed(want.key, max(want.minimum, had.minimum if had else 0),
                                     (*(had.needed_by if had else ()), inst.name), want.why or (had.why if had else ""))
    return tuple(found[key] for key in sorted(found))


def persisted_path(env: str) -> str:
    """The file under /etc/sysctl.d that keeps an environment's settings across reboots."""
    return f"/etc/sysctl.d/60-shipyard-{env}.conf"


def to_raise(current: dict[str, int | None], wanted: tuple[Needed, ...]) -> dict[str, int]:
    """key → the value to set now: each key whose current value is lower than needed (or unknown)."""
    return {n.key: n.minimum for n in wanted if current.get(n.key) is None or current[n.key] < n.minimum}  # type: ignore[operator]


def persisted_text(env: str, current: dict[str, int | None], wanted: tuple[Needed, ...]) -> str:
    """The persisted file: each key at the higher of what the host has and what is needed."""
    lines = [f"# Written by Shipyard for environment {env}: what its services need at least (a higher value the",
             "# host had is kept). Do not edit: the next deploy writes it again."]
    for n in wanted:
        value = max(n.minimum, current.get(n.key) or 0)
        lines.append(f"# {n.why or 'needed'} ({', '.join(n.needed_by)})")
        lines.append(f"{n.key} = {value}")
    return "\n".join(lines) + "\n"


def plan_lines(settings: EnvironmentSettings, host: HostSettings) -> list[str]:
    """What `make plan` says of a host's kernel settings (it does not read them: the deploy does)."""
    return [f"host: {n.key} >= {n.minimum} for {', '.join(n.needed_by)} (the deploy raises it if lower, "
            f"and keeps it in {persisted_path(settings.name)})" for n in needed(settings, host)]
