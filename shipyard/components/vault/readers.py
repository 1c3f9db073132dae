"""Whether the services that read their secrets from Vault hold what the deploy just wrote there.

Each such service's process keeps its copies current by itself (its credential keeper reads its
KV path every ``vault.kv_poll_s``, and at once when ``REFRESH_FILE`` in its hand-off directory
is touched) and reports the version of each copy it holds in ``HELD_FILE`` there — versions,
never values. After a rollout wrote new copies (a rotation), the deploy touches each running
reader's refresh file and waits here until every one reports them, before the servers drop the
old value (the rotation's retire phase): a process still on the old Redis password would be
refused at its next connection.

Controller-side I/O from the deploying machine, through the read-only HostView.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

from shipyard import topology
from shipyard.components.vault import HELD_FILE, REFRESH_FILE
from shipyard.components.vault.bootstrap import VaultError
from shipyard.controller.hosts import COMPOSE_SERVICE_LABEL, HostView


def behind(held: Mapping[str, int], wanted: Mapping[str, int]) -> list[str]:
    """The names whose copy a process holds at an older version than ``wanted`` (or not at all)."""
    return sorted(name for name, version in wanted.items() if int(held.get(name, 0)) < version)


def _held(container) -> dict[str, int] | None:
    result = container.exec_run(["cat", HELD_FILE])
    if result.exit_code != 0:
        return None
    try:
        return {str(k): int(v) for k, v in json.loads(result.output.decode()).get("kv", {}).items()}
    except (ValueError, AttributeError):
        return None


def _readers(settings, services: set[str]) -> list[tuple[str, str, object]]:
    """(service, "host H, container C", container) of every running container of ``services``."""
    topo = topology.build(settings)
    instance_service = {i.name: i.service.name for i in topo.instances if i.service.name in services}
    found = []
    for host in settings.hosts:
        if not any(i.name in instance_service for i in topo.instances_on(host)):
            continue
        for container in HostView(settings, host).containers():
            service = instance_service.get(container.labels.get(COMPOSE_SERVICE_LABEL, ""))
            if service and container.status == "running":
                found.append((service, f"host {host.name}, container {container.name}", container))
    return found


def wait_for_readers(settings, written: Mapping[tuple[str, str], int], timeout_s: float) -> list[str]:
    """Until every running container of a service with new copies (``written``: (service, name)
    → version) reports holding them; lines saying who and how long. Raises naming each one
    still behind, and what it holds, when ``timeout_s`` passes."""
    wanted: dict[str, dict[str, int]] = {}
    for (service, name), version in written.items():
        wanted.setdefault(service, {})[name] = version
    started = time.monotonic()
    for _, _, container in _readers(settings, set(wanted)):
        container.exec_run(["touch", REFRESH_FILE])  # read them now, not at the next poll
    while True:
        problems, holding, silent = [], 0, []
        for service, where, container in _readers(settings, set(wanted)):
            held = _held(container)
            if held is None:  # not reading from Vault (made before this deploy's settings): recreated by it
                silent.append(where)
                continue
            missing = behind(held, wanted[service])
            if missing:
                problems.append(f"{where}: still on an older {', '.join(missing)}")
            holding += 1
        took = time.monotonic() - started
        if not problems:
            names = sorted({name for names in wanted.values() for name in names})
            lines = [f"{holding} running container(s) of {', '.join(sorted(wanted))} hold the new "
                     f"{', '.join(names)} after {took:.1f}s"] if holding else []
            return lines + [f"{where}: reads no copies from Vault yet (recreated by this rollout)" for where in silent]
        if took >= timeout_s:
            raise VaultError(f"environment {settings.name}",
                             f"not every reader took the new secrets within {timeout_s:.0f}s:\n  " + "\n  ".join(problems),
                             "see its log (make logs SERVICE=..): it cannot read its KV path; the servers keep the "
                             "old value too until a deploy finds every reader on the new one (make up)")
        time.sleep(0.25)
