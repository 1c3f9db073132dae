"""Reading containers' log lines: `make logs`' filters (since when, at or above which level) and
`make trace`, one request or task followed across every container that logged it, merged by time
with the latency of each hop. Pure: the lines come from the engines through
shipyard.controller.views.

What a line says about a request or a task:
- JSON lines (the platform's logs) carry ``request_id`` and ``task_id`` fields, ``level``, and an
  access line's duration as ``latency_ms``;
- nginx access lines (the edge's and the router's format, as shipyard.bluegreen reads them too)
  carry ``rid=<request id>`` and ``$request_time`` after the status and the bytes sent.
An access line is written when the request ends: its hop *started* its duration earlier, and that
start orders the hops (the edge, then the router, then the API), not the time it was logged."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from shipyard.errors import ShipyardError

LEVELS = {"trace": 5, "debug": 10, "info": 20, "notice": 25, "warn": 30, "warning": 30, "error": 40, "err": 40,
          "critical": 50, "crit": 50, "fatal": 50, "alert": 60, "emerg": 70, "panic": 70}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_NGINX_RID = re.compile(r"\brid=([A-Za-z0-9._-]+)")
_NGINX_REQUEST_TIME = re.compile(r'" \d{3} \d+ ([0-9.]+) ')
_ENGINE_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d) ?")


# --- since, level ------------------------------------------------------------------------------

def parse_since(text: str, now: float, where: str = "SINCE") -> float:
    """Unix seconds from ``10m``/``2h``/``1d``/``90s`` (before ``now``), an ISO time
    (``2026-12-05T03:00:00``, UTC unless it says otherwise) or unix seconds."""
    value = text.strip()
    if m := _DURATION.match(value):
        return now - float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ShipyardError(where, f"{text!r} is neither a duration nor a time",
                            "give a duration (90s, 10m, 2h, 1d), an ISO time (2026-12-05T03:00:00, UTC) "
                            "or unix seconds") from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)).timestamp()


def check_level(name: str, where: str = "LEVEL") -> int:
    """A level's rank; an unknown name is refused with the known ones."""
    try:
        return LEVELS[name.strip().lower()]
    except KeyError:
        raise ShipyardError(where, f"{name!r} is not a log level",
                            f"use one of: {', '.join(sorted(LEVELS, key=LEVELS.get))}") from None


def _json(text: str) -> dict | None:
    if not text.startswith("{"):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def at_or_above(text: str, minimum: int) -> bool:
    """Whether `make logs LEVEL=` keeps a line: a JSON line with a known level at or above
    ``minimum``; lines without one (nginx's, a server's own text) are always kept."""
    doc = _json(text.strip())
    level = doc.get("level") if doc else None
    rank = LEVELS.get(level.lower()) if isinstance(level, str) else None
    return rank is None or rank >= minimum


def split_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Whole lines from a stream of chunks (a followed log cuts lines anywhere)."""
    pending = ""
    for chunk in chunks:
        pending += chunk.decode(errors="replace")
        *whole, pending = pending.split("\n")
        yield from whole
    if pending:
        yield pending


# --- trace -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class LogLine:
    where: str  # "<host> <service>"
    logged: float  # the engine's timestamp (unix seconds)
    text: str


@dataclass(frozen=True)
class Hop:
    line: LogLine
    started: float  # logged minus the duration the line reports
    took_s: float | None
    request_ids: frozenset[str]
    task_ids: frozenset[str]


def split_engine_timestamp(raw: str) -> tuple[float, str] | None:
    """(unix seconds, the line) of a line the engine gave with its timestamp
    (``2026-12-05T03:12:04.123456789Z {...}``); None when it has none."""
    m = _ENGINE_TS.match(raw)
    if not m:
        return None
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    when = dt.datetime.fromisoformat(m.group(1) + zone).timestamp()
    fraction = float("0." + m.group(2)) if m.group(2) else 0.0
    return when + fraction, raw[m.end():]


def hop_of(line: LogLine) -> Hop:
    """What one line says: the ids it carries and, for an access line, how long its hop took."""
    doc = _json(line.text.strip())
    requests: set[str] = set()
    tasks: set[str] = set()
    took: float | None = None
    if doc is not None:
        for key, ids in (("request_id", requests), ("task_id", tasks)):
            if isinstance(doc.get(key), str) and doc[key]:
                ids.add(doc[key])
        if isinstance(doc.get("latency_ms"), (int, float)):
            took = doc["latency_ms"] / 1000
    else:
        requests.update(_NGINX_RID.findall(line.text))
        if m := _NGINX_REQUEST_TIME.search(line.text):
            took = float(m.group(1))
    return Hop(line, line.logged - (took or 0.0), took, frozenset(requests), frozenset(tasks))


def follow(lines: Iterable[LogLine], request_ids: set[str], task_ids: set[str]) -> list[Hop]:
    """The lines of the given request(s) and task(s), and of those they link to: a line carrying
    both a request id and a task id (the request that created the task) joins the two, so a
    request's trace holds its task's lines and a task's trace the request that created it.
    In the order the hops started."""
    hops = [hop for hop in map(hop_of, lines) if hop.request_ids or hop.task_ids]
    wanted_requests, wanted_tasks = set(request_ids), set(task_ids)
    while True:
        found = [h for h in hops if h.request_ids & wanted_requests or h.task_ids & wanted_tasks]
        more_requests = set().union(*(h.request_ids for h in found)) - wanted_requests
        more_tasks = set().union(*(h.task_ids for h in found)) - wanted_tasks
        if not more_requests and not more_tasks:
            return _enclosing_first(sorted(found, key=lambda h: (h.started, h.line.logged)))
        wanted_requests |= more_requests
        wanted_tasks |= more_tasks


def _enclosing_first(hops: list[Hop]) -> list[Hop]:
    """Hops in start order, except that of two access lines whose spans overlap, the caller
    comes first: a proxy's line (not JSON) before the application's, and of two proxies the one
    that took longer (its span holds the call it made). Start estimates cannot tell
    them apart: each is the engine's time of the line — when the container's pipe delivered it,
    a few ms late under load, and an application logs after its answer — minus a rounded
    duration."""
    def caller_first(first: Hop, second: Hop) -> bool:
        if first.took_s is None or second.took_s is None or second.started >= first.line.logged:
            return False  # not two overlapping access lines
        first_proxy, second_proxy = (_json(h.line.text.strip()) is None for h in (first, second))
        if first_proxy != second_proxy:
            return second_proxy  # the application measures its own time, not the proxy's: no comparison
        return second.took_s > first.took_s

    hops = list(hops)
    swapped = True
    while swapped:
        swapped = False
        for i in range(len(hops) - 1):
            if caller_first(hops[i], hops[i + 1]):
                hops[i], hops[i + 1] = hops[i + 1], hops[i]
                swapped = True
    return hops


def _clock(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def _ms(seconds: float) -> str:
    return f"+{seconds * 1000:.1f}ms"


def trace_table(hops: list[Hop]) -> str:
    """One row per line: when its hop started (UTC), since the previous hop, since the first, how
    long it took (access lines), where, the line."""
    rows = [("started (UTC)", "since prev", "since first", "took", "where", "line")]
    for n, hop in enumerate(hops):
        previous = hops[n - 1].started if n else hop.started
        took = "" if hop.took_s is None else f"{hop.took_s * 1000:.1f}ms"
        rows.append((_clock(hop.started), _ms(hop.started - previous), _ms(hop.started - hops[0].started), took,
                     hop.line.where, hop.line.text.strip()))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip() for row in rows)
