"""When a schedule fires: its recurrence (a cron expression in an IANA time zone, or an interval
in seconds from an anchor), the first occurrence after an instant, and what a firing pass does
with the occurrences that came due since the last one (``due``, by the schedule's catch-up
policy). Pure: instants in, instants out; the clock is the caller's (PostgreSQL's).

Cron expressions are evaluated by cronsim (five fields, ranges, steps, lists, names, ``L``,
``W``, ``#``) in the schedule's time zone, so ``0 9 * * *`` is 09:00 local time on both sides
of a daylight-saving change. A local time that does not exist (skipped by the clocks going
forward) fires once at the jump; one that happens twice (clocks going back) fires once, at its
first instant.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from dataclasses import dataclass
from typing import Literal, Union

import cronsim

Catchup = Literal["latest", "all", "none"]
CATCHUP_POLICIES: tuple[Catchup, ...] = ("latest", "all", "none")

# `all` fires at most this many missed occurrences of one schedule (the most recent ones): an
# outage of a day under `* * * * *` would otherwise create 1,440 tasks at once.
CATCHUP_ALL_LIMIT = 100
# `none` fires the current occurrence only when it is at most this late: firing passes run every
# TASKS_MAINTENANCE_INTERVAL_SECONDS (1 s), so an occurrence found later than this was missed.
ON_TIME_SECONDS = 60.0
# Missed occurrences of a cron schedule are counted (for the metric) up to this many per pass:
# counting a year's outage of `* * * * *` one by one is not worth the CPU.
COUNT_LIMIT = 10_000

_MICROSECOND = dt.timedelta(microseconds=1)
_UTC = dt.timezone.utc


class RecurrenceError(ValueError):
    """A cron expression or time zone that cannot be used; the message says which and how to fix it."""


@dataclass(frozen=True)
class Cron:
    expression: str
    zone: zoneinfo.ZoneInfo

    def first_after(self, instant: dt.datetime) -> dt.datetime:
        return next(cronsim.CronSim(self.expression, instant.astimezone(self.zone))).astimezone(_UTC)

    def at_or_before(self, instant: dt.datetime):
        """Occurrences at or before ``instant``, newest first."""
        for local in cronsim.CronSim(self.expression, (instant + _MICROSECOND).astimezone(self.zone), reverse=True):
            yield local.astimezone(_UTC)


@dataclass(frozen=True)
class Interval:
    """Every ``seconds`` from ``anchor`` (the schedule's creation): anchor + k·seconds, k ≥ 1."""
    seconds: int
    anchor: dt.datetime

    def first_after(self, instant: dt.datetime) -> dt.datetime:
        k = max(1, math.floor((instant - self.anchor).total_seconds() / self.seconds) + 1)
        at = self.anchor + dt.timedelta(seconds=k * self.seconds)
        return at if at > instant else at + dt.timedelta(seconds=self.seconds)  # float rounding

    def at_or_before(self, instant: dt.datetime):
        k = math.floor((instant - self.anchor).total_seconds() / self.seconds)
        while k >= 1:
            at = self.anchor + dt.timedelta(seconds=k * self.seconds)
            if at <= instant:
                yield at
            k -= 1


Recurrence = Union[Cron, Interval]

# How many occurrences of a cron expression ``shortest_gap`` looks at: enough to see a burst
# within an hour or a day (``0-4 9 * * *``: five a minute apart), few enough to cost nothing.
GAP_SAMPLE = 64


def shortest_gap(recurrence: Recurrence, after: dt.datetime) -> float:
    """The shortest spacing in seconds between a schedule's occurrences: its interval, or for a
    cron expression the shortest between its next ``GAP_SAMPLE`` occurrences after ``after``
    (60 s at least: five fields have no seconds)."""
    if isinstance(recurrence, Interval):
        return float(recurrence.seconds)
    times = cronsim.CronSim(recurrence.expression, after.astimezone(recurrence.zone))
    previous, shortest = None, math.inf
    for _ in range(GAP_SAMPLE):
        try:
            at = next(times).astimezone(_UTC)
        except StopIteration:  # an expression that ends (a date that never comes again)
            break
        if previous is not None:
            shortest = min(shortest, (at - previous).total_seconds())
        previous = at
    return shortest


def example_cron(least_seconds: float) -> str:
    """The most frequent evenly spaced cron expression whose occurrences are at least
    ``least_seconds`` apart (for a refusal's message: what to write instead)."""
    for minutes in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30):  # the divisors of an hour
        if minutes * 60 >= least_seconds:
            return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
    for hours in (1, 2, 3, 4, 6, 8, 12):  # of a day
        if hours * 3600 >= least_seconds:
            return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"
    return "0 0 * * *"


def parse_cron(expression: str) -> str:
    """The expression if cronsim can evaluate it, else ``RecurrenceError`` saying what to write."""
    try:
        cronsim.CronSim(expression, dt.datetime(2000, 1, 1, tzinfo=_UTC))
    except cronsim.CronSimError as exc:
        raise RecurrenceError(f"{exc} in {expression!r}: five fields, minute hour day-of-month month day-of-week, "
                              f"e.g. '*/15 * * * *' or '30 9 * * mon-fri'") from None
    return expression


def parse_zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):  # ValueError: not a key at all ('../x', '')
        raise RecurrenceError(f"unknown IANA time zone {name!r}; e.g. 'UTC' or 'Europe/Paris'") from None


@dataclass(frozen=True)
class Due:
    """What a firing pass does with a schedule: the occurrences it fires (oldest first), how many
    it skips (missed, not fired, by the policy) and the schedule's next occurrence."""
    fire: list[dt.datetime]
    skipped: int
    next_run_at: dt.datetime


def due(recurrence: Recurrence, next_run_at: dt.datetime, now: dt.datetime, catchup: Catchup) -> Due:
    """The occurrences in [next_run_at, now] — normally one, as passes run every second or so;
    more after the firers were down — and, by ``catchup``:

    - ``latest``: fire the most recent one, skip the others;
    - ``all``: fire each, oldest first, at most the ``CATCHUP_ALL_LIMIT`` most recent;
    - ``none``: fire the most recent one only if it is at most ``ON_TIME_SECONDS`` late.
    """
    keep = CATCHUP_ALL_LIMIT if catchup == "all" else 1
    found = [at for _, at in zip(range(keep), _since(recurrence, next_run_at, now))]
    count = len(found) + _count_older(recurrence, next_run_at, found[-1]) if len(found) == keep else len(found)
    if catchup == "none" and found and (now - found[0]).total_seconds() > ON_TIME_SECONDS:
        found = []
    return Due(fire=sorted(found), skipped=count - len(found), next_run_at=recurrence.first_after(now))


def _since(recurrence: Recurrence, since: dt.datetime, now: dt.datetime):
    """Occurrences in [since, now], newest first. ``since`` (the schedule's ``next_run_at``) is
    one, found going forward: should going back not find it (a local time the clocks skip), it
    comes last all the same, so it is never lost."""
    for at in recurrence.at_or_before(now):
        if at <= since:
            break
        yield at
    if since <= now:
        yield since


def _count_older(recurrence: Recurrence, since: dt.datetime, oldest_kept: dt.datetime) -> int:
    """How many occurrences in [since, oldest_kept) (at most ``COUNT_LIMIT``)."""
    if isinstance(recurrence, Interval):  # arithmetic: occurrences are evenly spaced
        return min(COUNT_LIMIT, max(0, math.ceil((oldest_kept - since).total_seconds() / recurrence.seconds)))
    older = _since(recurrence, since, oldest_kept - _MICROSECOND)
    return sum(1 for _, _at in zip(range(COUNT_LIMIT), older))
