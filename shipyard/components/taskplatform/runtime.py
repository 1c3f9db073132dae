"""The task platform's runtime config in Consul: push, set one key, history, rollback — and
proof that every process applied it.

The desired document lives in the repo (``SHIPYARD.runtime`` of the inventory, with its
``SHIPYARD_RUNTIME__*`` overrides). A push:
1. validates it against the services' own schema (``taskplatform.runtime_config``), unknown
   keys refused, before anything is written;
2. diffs it against what Consul holds and, when they differ, writes it as the next version with
   check-and-set on the index it read (a push that lost the race writes nothing and says who
   won), in one transaction with its history entry (``history_key``: the document, when, who;
   the key layout is the services' own, ``consul_keys``);
3. waits until every running API process and worker reports the new document's hash as applied
   (``taskplatform.config_report``), or names each one that did not and why: rejected (with
   the instance's reason), its source failing (since when, the error), or still on an older one.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from shipyard import topology
from shipyard.components.consul.kv import ConsulKV, StaleWrite
from shipyard.components.taskplatform.consul_keys import history_key, history_prefix, runtime_key
from shipyard.errors import ShipyardError
from shipyard.controller.hosts import COMPOSE_SERVICE_LABEL, HostView
from shipyard.settings import EnvironmentSettings

REPORTING_SERVICES = ("api", "worker")
STATE_DIR = "/tmp/taskplatform/config-state"
# The reports of the processes still alive in the container (a process gone leaves its file).
READ_REPORTS = (f'for f in {STATE_DIR}/*.json; do [ -e "$f" ] || continue; p=${{f##*/}}; p=${{p%.json}}; '
                f'[ -d "/proc/$p" ] && cat "$f" && echo; done')


def encode(doc: dict) -> bytes:
    """One canonical form: the same document always has the same bytes, hence the same hash."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def doc_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]  # as the services compute it


# The task platform's own package, from this checkout: its schema is the one that decides.
SERVICES = Path(__file__).resolve().parents[3] / "services"


def validate(doc: dict) -> None:
    """The services' own check (unknown keys refused), before anything is written."""
    if str(SERVICES) not in sys.path:
        sys.path.insert(0, str(SERVICES))
    from taskplatform.runtime_config import ConfigRejected, validate_document

    try:
        validate_document(doc)
    except ConfigRejected as exc:
        raise ShipyardError("runtime config", f"invalid: {exc}",
                            "correct SHIPYARD.runtime in the inventory (or the KEY/VALUE given); nothing was written") from None


def changes(old: dict | None, new: dict) -> list[str]:
    """Key by key, what a push changes (the version aside)."""
    old = old or {}
    lines = []
    for key in sorted(set(old) | set(new)):
        if key == "version" or old.get(key) == new.get(key):
            continue
        before = json.dumps(old[key]) if key in old else "(absent)"
        after = json.dumps(new[key]) if key in new else "(removed)"
        lines.append(f"{key}: {before} -> {after}")
    return lines


def next_version(current: str | None) -> str:
    if current is None:
        return "1"
    if not current.isdigit():
        raise ShipyardError("runtime config in Consul", f"version {current!r} is not a number",
                            "push a document with a numeric version first")
    return str(int(current) + 1)


@dataclass(frozen=True)
class Report:
    where: str  # "host local, container shipyard-local-api-1, pid 8"
    state: dict


def not_applied(reports: list[Report], wanted: str) -> list[str]:
    """Why each process has not applied the document with hash ``wanted`` (empty: all have)."""
    problems = []
    for report in reports:
        state = report.state
        if state.get("hash") == wanted:
            continue
        rejected, watch = state.get("rejected") or {}, state.get("watch") or {}
        if rejected.get("hash") == wanted:
            problems.append(f"{report.where}: rejected it: {rejected.get('reason')} (keeps version {state.get('version')})")
        elif watch.get("state") == "failing":
            since = time.strftime("%H:%M:%S", time.localtime(watch.get("failing_since") or 0))
            problems.append(f"{report.where}: stale since {since}, cannot read its config: {watch.get('last_error')}")
        else:
            problems.append(f"{report.where}: still on version {state.get('version')}")
    return problems


def read_reports(settings: EnvironmentSettings) -> tuple[list[Report], list[str]]:
    """Every running API/worker process's report; and the containers that gave none."""
    reports, silent = [], []
    # Both colours' instances: a release's warm previous colour applies the config too.
    reporting = {name for service in REPORTING_SERVICES for name in topology.build(settings).instance_names("taskplatform", service)}
    for host in settings.hosts:
        if not any(i.component.name == "taskplatform" and i.service.name in REPORTING_SERVICES
                   for i in topology.build(settings).instances_on(host)):
            continue
        access = HostView(settings, host)
        for container in access.containers():
            if container.labels.get(COMPOSE_SERVICE_LABEL) not in reporting or container.status != "running":
                continue
            result = container.exec_run(["sh", "-c", READ_REPORTS])
            lines = [line for line in result.output.decode(errors="replace").splitlines() if line.startswith("{")]
            if not lines:
                silent.append(f"host {host.name}, container {container.name}: no process reports a config yet")
            for line in lines:
                state = json.loads(line)
                reports.append(Report(f"host {host.name}, container {container.name}, pid {state.get('pid')}", state))
    return reports, silent


def wait_applied(settings: EnvironmentSettings, wanted: str, timeout_s: float) -> tuple[float, int]:
    """(seconds until every process applied ``wanted``, processes); raises naming the others."""
    started = time.monotonic()
    while True:
        reports, silent = read_reports(settings)
        problems = silent + not_applied(reports, wanted)
        if reports and not problems:
            return time.monotonic() - started, len(reports)
        if time.monotonic() - started >= timeout_s:
            raise ShipyardError(f"environment {settings.name}",
                                f"not every process applied the config within {timeout_s:.0f}s:\n  " + "\n  ".join(
                                    problems or ["no API or worker process is running"]),
                                "see each reason above; Consul holds the new version, and the processes that "
                                "applied it run it (make config-rollback TO=<version> to go back)")
        time.sleep(0.1)


def push(settings: EnvironmentSettings, token: str, doc: dict, note: str, timeout_s: float = 30.0) -> str:
    """Write ``doc`` as the next version (check-and-set), then wait for every process. What to print."""
    kv = ConsulKV(settings, token)
    key = runtime_key(settings.name)
    current = kv.get(key)
    current_doc = json.loads(current.value) if current else None
    body = {k: v for k, v in doc.items() if k != "version"}
    validate({**body, "version": "0"})
    diff = changes(current_doc, {**body, "version": "0"})
    if current_doc is not None and not diff:
        took, count = wait_applied(settings, doc_hash(current.value), timeout_s)
        return (f"{settings.name}: Consul already holds this config (version {current_doc.get('version')}); "
                f"nothing written; all {count} processes run it")
    version = next_version(current_doc.get("version") if current_doc else None)
    new = {**body, "version": version}
    raw = encode(new)
    entry = encode({"document": new, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "by": f"{getpass.getuser()}@{socket.gethostname()}", "note": note})
    try:
        kv.write(key, raw, current.modify_index if current else 0,
                 also={history_key(settings.name, version): entry})
    except StaleWrite:
        raise ShipyardError(kv.where, f"{key} changed since it was read (another push won); nothing was written",
                            f"see what it holds now: make config-history ENV={settings.name}; then push again "
                            f"if yours should win") from None
    took, count = wait_applied(settings, doc_hash(raw), timeout_s)
    return (f"{settings.name}: runtime config version {version} ({note}):\n  " + "\n  ".join(diff)
            + f"\napplied by all {count} processes {took:.2f}s after the write")


def desired(settings: EnvironmentSettings) -> dict:
    return settings.runtime.model_dump(mode="json")


def current_document(settings: EnvironmentSettings, token: str) -> dict:
    entry = ConsulKV(settings, token).get(runtime_key(settings.name))
    if entry is None:
        raise ShipyardError(f"environment {settings.name}", "Consul holds no runtime config yet",
                            f"deploy first: make up ENV={settings.name}")
    return json.loads(entry.value)


def history(settings: EnvironmentSettings, token: str) -> list[dict]:
    kv = ConsulKV(settings, token)
    entries = []
    for key in kv.keys(history_prefix(settings.name)):
        item = kv.get(key)
        if item is not None:
            entries.append(json.loads(item.value))
    return entries


def version_from_history(settings: EnvironmentSettings, token: str, version: str) -> dict:
    if not version.isdigit():
        raise ShipyardError("TO", f"{version!r} is not a version number", "see make config-history")
    item = ConsulKV(settings, token).get(history_key(settings.name, version))
    if item is None:
        raise ShipyardError("TO", f"no version {version} in the history of {settings.name}",
                            f"pick one from make config-history ENV={settings.name}")
    return json.loads(item.value)["document"]
