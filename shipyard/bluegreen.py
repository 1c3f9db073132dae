"""Blue-green releases: the state a host keeps of them, and what follows from it. Pure.

A service declared ``coloured`` (shipyard.component.Service) runs as two instances,
``<name>-blue`` and ``<name>-green``; the edge routes users to the *live* colour. A release
starts the other colour with the new version next to the live one, smoke-tests it through the
edge's preview route, switches the edge, and watches it (shipyard.controller.releases does the steps).

The host keeps the state in ``<deploy_root>/.<env>.release/`` (beside the project, which a
deploy rewrites whole): ``state.json`` (ReleaseState), ``history.jsonl`` (one line per release
or rollback) and ``routing/live.conf`` (which colour the routing service — the edge — sends
users to, in its own syntax: ``Component.release_routing``; rewritten by a switch, then reloaded).
A plain deploy reads the state and keeps it: the live colour at its version, the previous one
warm until ``release.keep_previous_seconds`` have passed, then removed.

Versioned images (shipyard.component.Image with a ``tag``) are referenced through variables of
the project's ``.env``: ``SHIPYARD_VERSION_<COLOUR>`` for a coloured service, ``SHIPYARD_VERSION``
(the newest release: its migrations are the ones that ran) for the others.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from shipyard.errors import ShipyardError

COLOURS = ("blue", "green")
STATE_FILE = "state.json"
HISTORY_FILE = "history.jsonl"
ROUTING_DIR = "routing"  # mounted into the routing services (Service.routing_mount)
ROUTING_FILE = "live.conf"
VERSION_PATTERN = r"^[0-9A-Za-z._-]{1,64}$"


def check_version(value: str) -> str:
    """``value`` as a release's version (an image tag, a line of the project's .env and of
    state.json), or the error that says so: before anything happens."""
    if not re.fullmatch(VERSION_PATTERN, value):
        raise ShipyardError("VERSION (make release VERSION=...)",
                            f"{value!r} is not a version: it must match {VERSION_PATTERN} "
                            "(1 to 64 letters, digits, '.', '_' or '-')",
                            "use e.g. VERSION=1.4.2, or leave VERSION out to release the checkout's commit")
    return value


def other(colour: str) -> str:
    return COLOURS[1 - COLOURS.index(colour)]


def release_dir(deploy_root: str, env: str) -> str:
    return f"{deploy_root.rstrip('/')}/.{env}.release"


def state_file(deploy_root: str, env: str) -> str:
    """The host's release state (STATE_FILE in ``release_dir``)."""
    return f"{release_dir(deploy_root, env)}/{STATE_FILE}"


def version_variable(colour: str | None) -> str:
    """The .env variable a versioned image's tag comes from."""
    return f"SHIPYARD_VERSION_{colour.upper()}" if colour else "SHIPYARD_VERSION"


@dataclass(frozen=True)
class ReleaseState:
    live: str = "blue"
    versions: dict[str, str] = field(default_factory=dict)  # colour → the version it runs (or ran last)
    newest: str | None = None  # the newest version started: its image runs the one-shots (migrations)
    warm_until: float | None = None  # the other colour is kept running until then (a Unix time)
    starting: str | None = None  # the colour a release is starting, not switched to yet

    @classmethod
    def initial(cls, version: str) -> ReleaseState:
        """A host no release has touched: blue runs the settings' version."""
        return cls(live="blue", versions={"blue": version}, newest=version)

    @classmethod
    def of_host(cls, text: str | None, where: str, first_version: str) -> tuple[ReleaseState, bool]:
        """(the state a host's state.json holds, whether a release recorded it): a host no
        release has touched (no file, or an empty one) runs ``first_version`` in blue."""
        state = cls.parse(text, where)
        return (state, True) if state else (cls.initial(first_version), False)

    @classmethod
    def parse(cls, text: str | None, where: str) -> ReleaseState | None:
        if not text or not text.strip():
            return None
        try:
            raw = json.loads(text)
            state = cls(live=raw["live"], versions=dict(raw.get("versions") or {}), newest=raw.get("newest"),
                        warm_until=raw.get("warm_until"), starting=raw.get("starting"))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{where}: not a release state ({exc}); fix or remove it (the next release "
                             "rewrites it)") from None
        for colour in (state.live, state.starting, *state.versions):
            if colour is not None and colour not in COLOURS:
                raise ValueError(f"{where}: unknown colour {colour!r} (one of {', '.join(COLOURS)})")
        return state

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1) + "\n"

    @property
    def idle(self) -> str:
        return other(self.live)

    @property
    def live_version(self) -> str | None:
        return self.versions.get(self.live)

    def warm(self, now: float) -> bool:
        """The idle colour is kept for an instant rollback."""
        return self.warm_until is not None and now < self.warm_until and self.idle in self.versions

    def env_variables(self) -> dict[str, str]:
        """The .env lines of versioned images (absent ones fall back to the render's default)."""
        out = {version_variable(c): v for c, v in sorted(self.versions.items())}
        if self.newest:
            out[version_variable(None)] = self.newest
        return out

    def colours_to_run(self) -> tuple[str, ...]:
        """Colours a deploy converges: the live one, and the one a release is starting."""
        return tuple(c for c in COLOURS if c == self.live or c == self.starting)

    def colours_to_converge(self) -> tuple[str, ...]:
        """Colours a deploy converges: the one a release starts (the live one is held as it is:
        compose would recreate it with the one-shots it depends on), else the live one."""
        return (self.starting,) if self.starting else (self.live,)

    def colours_to_remove(self, now: float) -> tuple[str, ...]:
        """Colours a deploy stops and removes: the idle one once no longer kept warm (a release
        cut off before its switch leaves one behind too)."""
        idle = self.idle
        return () if idle == self.starting or self.warm(now) else (idle,)

    def starting_release(self, version: str) -> ReleaseState:
        target = self.idle
        return replace(self, versions={**self.versions, target: version}, newest=version, starting=target,
                       warm_until=None)

    def switched(self, to: str, keep_previous_s: float, now: float) -> ReleaseState:
        return replace(self, live=to, starting=None, warm_until=now + keep_previous_s)

    def without_idle(self) -> ReleaseState:
        """The idle colour removed (after a failed start or a rollback away from a bad version)."""
        return replace(self, starting=None, warm_until=None,
                       versions={c: v for c, v in self.versions.items() if c == self.live})


# --- history -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    """One line of history.jsonl."""

    action: str  # release | rollback
    version: str
    colour: str
    previous: str | None  # the version live before
    started_at: float
    who: str
    result: str  # done | rolled back | failed: <step> | already live
    steps: dict[str, float] = field(default_factory=dict)  # step → seconds
    why: str = ""  # a rollback's reason, a failure's

    def line(self) -> str:
        return json.dumps(asdict(self), sort_keys=True) + "\n"


def parse_history(text: str | None) -> list[Record]:
    records = []
    for line in (text or "").splitlines():
        if line.strip():
            raw = json.loads(line)
            records.append(Record(**{k: raw.get(k) for k in Record.__dataclass_fields__ if k in raw}))
    return records


def history_table(records: list[Record]) -> str:
    header = ("when (UTC)", "action", "version", "colour", "from", "who", "result", "seconds per step", "why")
    rows = [header]
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.started_at))
        steps = " ".join(f"{k} {v:.1f}" for k, v in r.steps.items())
        rows.append((when, r.action, r.version, r.colour, r.previous or "-", r.who, r.result, steps or "-", r.why or "-"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


# --- the watch -----------------------------------------------------------------------------------

# The routing service's access log line (the edge's nginx log_format main):
#   ... "<request>" <status> <bytes> <request_time> ... colour=<colour>
_EDGE_LINE = re.compile(r'" (\d{3}) \d+ ([0-9.]+) .*\bcolour=(\w+)')


@dataclass(frozen=True)
class Traffic:
    """Answers of one colour in a window, as the edge saw them."""

    answers: int = 0
    errors: int = 0  # 5xx
    seconds: tuple[float, ...] = ()

    @property
    def error_rate(self) -> float:
        return self.errors / self.answers if self.answers else 0.0

    @property
    def p95_ms(self) -> float:
        if not self.seconds:
            return 0.0
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)] * 1000

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(self.answers + other.answers, self.errors + other.errors, self.seconds + other.seconds)

    def describe(self) -> str:
        return f"{self.answers} answers, {self.errors} 5xx ({self.error_rate:.1%}), p95 {self.p95_ms:.0f} ms"


def routed_traffic(log: str, colour: str) -> Traffic:
    """The answers given from ``colour`` in these access log lines of the routing service (the
    preview route logs as ``preview``: the smoke test's requests are not user traffic)."""
    answers = errors = 0
    seconds = []
    for line in log.splitlines():
        match = _EDGE_LINE.search(line)
        if not match or match.group(3) != colour:
            continue
        status = int(match.group(1))
        answers += 1
        errors += status >= 500
        seconds.append(float(match.group(2)))
    return Traffic(answers, errors, tuple(seconds))


def verdict(baseline: Traffic, new: Traffic, settings: Any) -> str | None:
    """Why the new colour must be rolled back, judging ``new`` as one whole (None: it does as well
    as the old one did). ``settings``: shipyard.settings.ReleaseSettings."""
    return _error_verdict(baseline, new, settings) or _latency_verdict(baseline, new, settings)


def _error_verdict(baseline: Traffic, new: Traffic, settings: Any) -> str | None:
    if new.answers < settings.min_requests:
        return None
    allowed = baseline.error_rate + settings.max_error_rate
    if new.error_rate > allowed:
        return (f"error rate {new.error_rate:.1%} ({new.errors} of {new.answers} answers were 5xx) is above "
                f"{allowed:.1%} (the old colour's {baseline.error_rate:.1%} + release.max_error_rate "
                f"{settings.max_error_rate:.1%})")
    return None


def _latency_verdict(baseline: Traffic, new: Traffic, settings: Any) -> str | None:
    if new.answers < settings.min_requests:
        return None
    limit = max(settings.p95_floor_ms, baseline.p95_ms * settings.max_p95_ratio)
    if new.p95_ms > limit:
        return (f"p95 {new.p95_ms:.0f} ms is above {limit:.0f} ms (the old colour's {baseline.p95_ms:.0f} ms x "
                f"release.max_p95_ratio {settings.max_p95_ratio}, at least release.p95_floor_ms)")
    return None


@dataclass
class Watch:
    """The watch's verdict as the new colour's answers come in, window by window.

    Errors are judged over everything since the switch: a 5xx is never a warm-up effect. Latency
    is judged over consecutive *stretches* of at least ``release.min_requests`` answers, and only
    ``release.latency_strikes`` slow stretches in a row roll back: a new colour's first second is
    slower (its connection pools fill, its code paths run for the first time) and, judged as one
    whole with what follows, that second alone kept the p95 above the limit for the rest of a
    short watch and rolled back a release that was fine (bench-release, 2 cores: 93 answers of the
    first second at p95 214 ms against the old colour's 24 ms). A real regression is slow in
    every stretch and rolls back after ``latency_strikes`` of them."""

    baseline: Traffic
    settings: Any  # shipyard.settings.ReleaseSettings
    seen: Traffic = field(default_factory=Traffic)  # everything since the switch
    stretch: Traffic = field(default_factory=Traffic)  # answers not judged for latency yet
    strikes: int = 0  # slow stretches in a row

    def add(self, window: Traffic) -> str | None:
        """Why to roll back, now that ``window``'s answers came in (None: not so far)."""
        self.seen = self.seen + window
        self.stretch = self.stretch + window
        if self.stretch.answers < self.settings.min_requests:
            return _error_verdict(self.baseline, self.seen, self.settings)
        slow = _latency_verdict(self.baseline, self.stretch, self.settings)
        self.strikes = self.strikes + 1 if slow else 0
        self.stretch = Traffic()
        if slow and self.strikes >= self.settings.latency_strikes:
            return (f"{slow}, in {self.strikes} stretches of answers in a row (release.latency_strikes "
                    f"{self.settings.latency_strikes})")
        return _error_verdict(self.baseline, self.seen, self.settings)
