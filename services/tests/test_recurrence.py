"""Schedules' recurrences without a server: cron in a time zone (across daylight-saving changes),
intervals from an anchor, what a firing pass fires by each catch-up policy, and the refusals of
what cannot be evaluated."""

import datetime as dt
import zoneinfo

import pytest

from taskplatform import recurrence
from taskplatform.recurrence import Cron, Interval, due

UTC = dt.timezone.utc
PARIS = zoneinfo.ZoneInfo("Europe/Paris")


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def test_cron_runs_in_its_time_zone_across_daylight_saving_changes():
    nine_daily = Cron("0 9 * * *", PARIS)
    # 09:00 in Paris is 08:00 UTC in winter, 07:00 UTC in summer (the change: 2026-03-29).
    assert nine_daily.first_after(utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 7)
    assert nine_daily.first_after(utc(2026, 3, 27, 12)) == utc(2026, 3, 28, 8)


def test_a_skipped_local_time_fires_once_at_the_jump_and_a_repeated_one_once():
    half_past_two = Cron("30 2 * * *", PARIS)
    # 2026-03-29 02:30 does not exist in Paris (02:00 → 03:00): it fires at the jump, 01:00 UTC.
    assert half_past_two.first_after(utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1)
    # 2026-10-25 02:30 happens twice (03:00 → 02:00): it fires at the first, 00:30 UTC, only.
    first = half_past_two.first_after(utc(2026, 10, 24, 12))
    assert first == utc(2026, 10, 25, 0, 30)
    assert half_past_two.first_after(first) == utc(2026, 10, 26, 1, 30)


@pytest.mark.parametrize("occurrence", [utc(2026, 3, 29, 1), utc(2026, 10, 25, 0, 30)])
def test_a_pass_at_a_daylight_saving_change_fires_its_occurrence(occurrence):
    plan = due(Cron("30 2 * * *", PARIS), occurrence, occurrence + dt.timedelta(seconds=0.3), "latest")
    assert plan.fire == [occurrence] and plan.skipped == 0 and plan.next_run_at > occurrence


def test_first_after_is_strictly_after_and_at_or_before_includes_the_instant():
    hourly = Cron("0 * * * *", UTC)
    assert hourly.first_after(utc(2026, 1, 1, 10)) == utc(2026, 1, 1, 11)
    assert next(hourly.at_or_before(utc(2026, 1, 1, 10))) == utc(2026, 1, 1, 10)
    every_ten = Interval(10, utc(2026, 1, 1))
    assert every_ten.first_after(utc(2026, 1, 1, 0, 0, 20)) == utc(2026, 1, 1, 0, 0, 30)
    assert every_ten.first_after(utc(2026, 1, 1)) == utc(2026, 1, 1, 0, 0, 10)  # the anchor itself never fires
    assert list(every_ten.at_or_before(utc(2026, 1, 1, 0, 0, 25))) == [utc(2026, 1, 1, 0, 0, 20),
                                                                       utc(2026, 1, 1, 0, 0, 10)]


def test_an_on_time_pass_fires_the_one_occurrence_due_whatever_the_policy():
    every_minute = Interval(60, utc(2026, 1, 1))
    for policy in recurrence.CATCHUP_POLICIES:
        plan = due(every_minute, utc(2026, 1, 1, 0, 5), utc(2026, 1, 1, 0, 5, 0, 300_000), policy)
        assert plan == recurrence.Due([utc(2026, 1, 1, 0, 5)], 0, utc(2026, 1, 1, 0, 6)), policy


def test_nothing_fires_before_next_run_at():
    plan = due(Interval(60, utc(2026, 1, 1)), utc(2026, 1, 1, 0, 5), utc(2026, 1, 1, 0, 4, 59), "all")
    assert plan.fire == [] and plan.skipped == 0 and plan.next_run_at == utc(2026, 1, 1, 0, 5)


EVERY_FIVE_MINUTES = Interval(300, utc(2026, 1, 1))
MISSED = [utc(2026, 1, 1, 0, 5) + dt.timedelta(minutes=5 * k) for k in range(12)]  # 00:05 … 01:00


@pytest.mark.parametrize("policy, fired", [("latest", MISSED[-1:]), ("all", MISSED), ("none", [])])
def test_after_an_outage_each_policy_fires_what_it_says(policy, fired):
    # Due since 00:05, found at 01:02: twelve occurrences, the latest (01:00) 120 s late.
    plan = due(EVERY_FIVE_MINUTES, utc(2026, 1, 1, 0, 5), utc(2026, 1, 1, 1, 2), policy)
    assert plan == recurrence.Due(fired, len(MISSED) - len(fired), utc(2026, 1, 1, 1, 5))


def test_none_still_fires_the_latest_occurrence_while_it_is_on_time():
    plan = due(EVERY_FIVE_MINUTES, utc(2026, 1, 1, 0, 5), utc(2026, 1, 1, 1, 0, 59), "none")
    assert plan.fire == MISSED[-1:] and plan.skipped == len(MISSED) - 1


def test_all_fires_at_most_the_limit_of_the_most_recent_and_counts_the_rest():
    plan = due(Interval(1, utc(2026, 1, 1)), utc(2026, 1, 1, 0, 0, 1), utc(2026, 1, 1, 0, 10), "all")
    assert len(plan.fire) == recurrence.CATCHUP_ALL_LIMIT
    assert plan.fire[0] == utc(2026, 1, 1, 0, 10) - dt.timedelta(seconds=recurrence.CATCHUP_ALL_LIMIT - 1)
    assert plan.fire[-1] == utc(2026, 1, 1, 0, 10) and plan.fire == sorted(plan.fire)
    assert plan.skipped == 600 - recurrence.CATCHUP_ALL_LIMIT


def test_a_cron_outage_is_counted_up_to_the_bound():
    every_minute = Cron("* * * * *", UTC)
    plan = due(every_minute, utc(2026, 1, 1), utc(2026, 1, 1, 2, 0, 30), "latest")
    assert plan.fire == [utc(2026, 1, 1, 2)] and plan.skipped == 120
    year_long = due(every_minute, utc(2025, 1, 1), utc(2026, 1, 1), "latest")
    assert year_long.skipped == recurrence.COUNT_LIMIT and year_long.fire == [utc(2026, 1, 1)]


@pytest.mark.parametrize("expression", ["* * * *", "61 * * * *", "* 24 * * *", "*/0 * * * *", "5-1 * * * *",
                                        "* * * * funday", "hello"])
def test_an_expression_cron_cannot_evaluate_is_refused_saying_what_to_write(expression):
    with pytest.raises(recurrence.RecurrenceError) as refused:
        recurrence.parse_cron(expression)
    assert repr(expression) in str(refused.value) and "five fields" in str(refused.value)


@pytest.mark.parametrize("expression", ["*/15 * * * *", "30 9 * * mon-fri", "0 0 1,15 jan,jul *", "0 12 L * *"])
def test_ranges_steps_lists_and_names_are_accepted(expression):
    assert recurrence.parse_cron(expression) == expression


@pytest.mark.parametrize("name", ["Mars/Olympus", "../etc/passwd", "", "Europe/"])
def test_an_unknown_time_zone_is_refused_with_an_example(name):
    with pytest.raises(recurrence.RecurrenceError, match="unknown IANA time zone.*Europe/Paris"):
        recurrence.parse_zone(name)
