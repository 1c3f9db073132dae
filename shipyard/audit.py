"""The audit trail's data: one event per command that changes an environment (a deploy, a
release, a rollback, a secret rotation, a component's changing command such as a config push or
a promotion), built here and kept as one JSON line in ``<deploy_root>/.<env>.audit.log`` on each
host of the environment. Pure: who ran it, the checkout's commit and the hosts are gathered and
written by shipyard.controller.audit_log; this module builds, reads and shows events.

An event never holds a secret value: options a command marks sensitive are written as ``***``,
and only an error's first line is kept (errors name what failed, never a value)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

LOG_MODE = 0o640  # root writes; the group that may read operators' actions reads
MASK = "***"
FORMAT_VERSION = 1


def audit_log_path(deploy_root: str, env: str) -> str:
    """Beside the project, not in it: a deploy compares and copies the project (the last-good
    copy), and `make down VOLUMES=1` deletes it, while the trail outlives both."""
    return f"{deploy_root.rstrip('/')}/.{env}.audit.log"


@dataclass(frozen=True)
class Checkout:
    """The git commit the command ran from, and whether the checkout differed from it."""

    commit: str  # "" when not a git checkout
    dirty: bool


@dataclass(frozen=True)
class AuditEvent:
    id: str  # the same on every host, so a reader merging hosts shows it once
    env: str
    command: str
    options: dict[str, object]
    user: str
    machine: str
    commit: str
    dirty: bool
    started: float  # unix seconds
    duration_s: float
    result: str  # "ok" or "failed"
    exit_code: int | None  # None: interrupted before the command returned one
    error: str = ""  # the first line of the error, when one was raised
    version: int = field(default=FORMAT_VERSION)


def masked_options(options: Mapping[str, object], sensitive: Iterable[str]) -> dict[str, object]:
    """The options as given, ``***`` for the sensitive ones that were set; values other than
    JSON's scalars written as text (a path, a number's repr)."""
    hidden = set(sensitive)
    out: dict[str, object] = {}
    for name, value in sorted(options.items()):
        if name in hidden and value not in (None, "", False):
            out[name] = MASK
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = str(value)
    return out


def first_line(error: BaseException | str | None) -> str:
    """The first non-empty line of an error (``ShipyardError`` puts where and what first)."""
    if error is None:
        return ""
    text = (str(error) or type(error).__name__) if isinstance(error, BaseException) else str(error)
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    problems = getattr(error, "problems", None)  # SettingsError & co.: a heading, then each problem
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        line = f"{line} {problems[0].where}: {problems[0].what}{more}"
    return line[:300]


def build_event(*, event_id: str, env: str, command: str, options: Mapping[str, object], sensitive: Iterable[str],
                user: str, machine: str, checkout: Checkout, started: float, duration_s: float,
                exit_code: int | None, error: BaseException | str | None = None) -> AuditEvent:
    """One command's event. A command failed when it returned non-zero, raised, or was
    interrupted (``exit_code`` None)."""
    return AuditEvent(id=event_id, env=env, command=command, options=masked_options(options, sensitive),
                      user=user, machine=machine, commit=checkout.commit, dirty=checkout.dirty,
                      started=round(started, 3), duration_s=round(max(duration_s, 0.0), 3),
                      result="ok" if exit_code == 0 and error is None else "failed",
                      exit_code=exit_code, error=first_line(error))


def to_line(event: AuditEvent) -> str:
    """The event as it is appended: one line of JSON, keys sorted, newline-terminated."""
    return json.dumps(asdict(event), sort_keys=True, separators=(",", ":")) + "\n"


def parse_lines(text: str, where: str) -> tuple[list[AuditEvent], list[str]]:
    """The events of an audit log, and a problem line for each line that is not one (a torn
    write, a hand edit): reported, never fatal, so one bad line hides no other event."""
    events: list[AuditEvent] = []
    problems: list[str] = []
    known = set(AuditEvent.__dataclass_fields__)
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            events.append(AuditEvent(**{k: v for k, v in doc.items() if k in known}))
        except (ValueError, TypeError) as exc:
            problems.append(f"{where}:{number}: not an audit event ({type(exc).__name__}); line skipped")
    return events, problems


def merge(per_host: Iterable[Iterable[AuditEvent]]) -> list[AuditEvent]:
    """Every host's events as one list in time order, each event once (it is on every host)."""
    seen: dict[str, AuditEvent] = {}
    for events in per_host:
        for event in events:
            seen.setdefault(event.id, event)
    return sorted(seen.values(), key=lambda e: (e.started, e.id))


def _what(event: AuditEvent) -> str:
    words = [event.command]
    for name, value in event.options.items():
        if value in (None, False, ""):
            continue
        words.append(f"--{name}" if value is True else f"--{name}={value}")
    return " ".join(words)


def _result(event: AuditEvent) -> str:
    if event.result == "ok":
        return "ok"
    code = "interrupted" if event.exit_code is None else f"exit {event.exit_code}"
    return f"FAILED ({code})" + (f": {event.error}" if event.error else "")


def _when(started: float) -> str:
    return dt.datetime.fromtimestamp(started, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def table(events: list[AuditEvent], last: int) -> str:
    """The last ``last`` events, oldest first, as aligned columns; the result column last (it
    holds the error's line, of any length)."""
    rows = [("started (UTC)", "took", "who", "command", "commit", "result")]
    for event in events[-last:] if last > 0 else []:
        commit = (event.commit[:12] or "(no git)") + ("+dirty" if event.dirty else "")
        rows.append((_when(event.started), f"{event.duration_s:.1f}s", f"{event.user}@{event.machine}",
                     _what(event), commit, _result(event)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip() for row in rows)
