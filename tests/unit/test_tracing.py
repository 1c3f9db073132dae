"""Reading containers' lines (shipyard.tracing): `make logs` SINCE= and LEVEL=, and `make trace`
following one request or task across the edge's, the router's, the API's and a worker's lines,
in the order the hops started, linked through the line that names both."""

import datetime as dt
import json

import pytest

from shipyard import tracing
from shipyard.errors import ShipyardError
from shipyard.tracing import LogLine

NOW = 1796440000.0


@pytest.mark.parametrize("text, expected", [
    ("90s", NOW - 90), ("10m", NOW - 600), ("2h", NOW - 7200), ("1d", NOW - 86400), ("1.5h", NOW - 5400),
    ("1796430000", 1796430000.0),
    ("2026-12-05T03:00:00", dt.datetime(2026, 12, 5, 3, tzinfo=dt.timezone.utc).timestamp()),
    ("2026-12-05T03:00:00Z", dt.datetime(2026, 12, 5, 3, tzinfo=dt.timezone.utc).timestamp()),
    ("2026-12-05T04:00:00+01:00", dt.datetime(2026, 12, 5, 3, tzinfo=dt.timezone.utc).timestamp()),
])
def test_since_takes_a_duration_a_time_or_unix_seconds(text, expected):
    assert tracing.parse_since(text, NOW) == pytest.approx(expected)


def test_a_since_that_is_neither_says_what_to_give():
    with pytest.raises(ShipyardError, match=r"SINCE: 'yesterday' is neither.*\n\s*fix: give a duration"):
        tracing.parse_since("yesterday", NOW)


def test_level_keeps_json_lines_at_or_above_it_and_every_line_that_is_not_json():
    warning = tracing.check_level("WARNING")
    assert tracing.at_or_above('{"level": "error", "msg": "x"}', warning)
    assert tracing.at_or_above('{"level": "warn", "msg": "x"}', warning)
    assert not tracing.at_or_above('{"level": "info", "msg": "x"}', warning)
    assert not tracing.at_or_above('  {"level": "DEBUG"}', warning)
    assert tracing.at_or_above('10.0.0.1 "GET / HTTP/1.1" 200 1 0.001 rid=a', warning)  # nginx: kept
    assert tracing.at_or_above('{"msg": "no level"}', warning)
    assert tracing.at_or_above('{"level": "loud"}', warning)  # an unknown level: kept, not guessed
    with pytest.raises(ShipyardError, match="'verbose' is not a log level"):
        tracing.check_level("verbose")


def test_a_followed_stream_gives_whole_lines():
    assert list(tracing.split_lines([b'{"a"', b': 1}\n{"b": 2}\nx', b"y\n", b"tail"])) == [
        '{"a": 1}', '{"b": 2}', "xy", "tail"]


def test_the_engine_s_timestamp_keeps_its_sub_second_part():
    at, text = tracing.split_engine_timestamp("2026-12-05T03:10:46.026123456Z {\"x\": 1}")
    assert at == pytest.approx(dt.datetime(2026, 12, 5, 3, 10, 46, tzinfo=dt.timezone.utc).timestamp() + 0.026123456)
    assert text == '{"x": 1}'
    assert tracing.split_engine_timestamp("no timestamp here") is None


RID, TASK = "0e9bf8b24fe8b7a00f813a7ba642e711", "4d43d839-6453-488c-9610-a6b3e50db18e"


def _json(**doc) -> str:
    return json.dumps(doc)


def request_lines() -> list[LogLine]:
    """One task created through the edge, as each container logged it: access lines come last
    (written when the request ends), each its duration after its hop started."""
    return [
        LogLine("h worker-blue", NOW + 0.050, _json(ts=NOW + 0.05, level="info", msg="task succeeded", task_id=TASK)),
        LogLine("h api-blue", NOW + 0.0080, _json(level="info", msg="request", request_id=RID, task_id=TASK,
                                                  route="/v1/tasks", status=202, latency_ms=5.0)),
        LogLine("h router", NOW + 0.0085,
                f'10.0.0.2 "POST /v1/tasks HTTP/1.1" 202 286 0.007 rid={RID} upstream=10.0.0.3:8000 colour=blue'),
        LogLine("h edge", NOW + 0.0090,
                f'10.0.0.1 "POST /v1/tasks HTTP/1.1" 202 286 0.009 rid={RID} upstream=10.0.0.2:8080'),
        LogLine("h edge", NOW + 0.0100, '10.0.0.1 "GET /v1/tasks HTTP/1.1" 200 10 0.001 rid=another upstream=x'),
        LogLine("h worker-blue", NOW + 0.060, _json(level="info", msg="task succeeded", task_id="other-task")),
        LogLine("h postgres", NOW + 0.070, "LOG:  checkpoint complete"),
    ]


def test_a_request_is_followed_to_its_task_in_the_order_the_hops_started():
    hops = tracing.follow(request_lines(), {RID}, set())
    assert [h.line.where for h in hops] == ["h edge", "h router", "h api-blue", "h worker-blue"]
    assert [round(h.started - NOW, 4) for h in hops] == [0.0, 0.0015, 0.003, 0.05]
    assert [h.took_s for h in hops] == [0.009, 0.007, 0.005, None]


def test_a_task_is_followed_back_to_the_request_that_created_it():
    hops = tracing.follow(request_lines(), set(), {TASK})
    assert [h.line.where for h in hops] == ["h edge", "h router", "h api-blue", "h worker-blue"]


def test_an_id_no_line_carries_finds_nothing():
    assert tracing.follow(request_lines(), {"nobody"}, set()) == []


def test_the_table_gives_each_hop_its_latency_since_the_previous_and_the_first():
    table = tracing.trace_table(tracing.follow(request_lines(), {RID}, set())).splitlines()
    assert table[0].split()[:6] == ["started", "(UTC)", "since", "prev", "since", "first"]
    first = dt.datetime.fromtimestamp(NOW, dt.timezone.utc).strftime("%H:%M:%S.000")
    assert table[1].split()[:4] == [first, "+0.0ms", "+0.0ms", "9.0ms"]
    assert table[2].split()[1:4] == ["+1.5ms", "+1.5ms", "7.0ms"]
    assert table[3].split()[1:4] == ["+1.5ms", "+3.0ms", "5.0ms"]
    assert table[4].split()[1:3] == ["+47.0ms", "+50.0ms"] and table[4].endswith('"task_id": "%s"}' % TASK)


def test_overlapping_access_lines_are_shown_callers_first_whatever_their_start_estimates():
    from shipyard.tracing import LogLine, follow

    rid = "r" * 32
    app = LogLine("h api-green", 100.0060, '{"msg": "request", "request_id": "%s", "latency_ms": 4.0}' % rid)
    edge = LogLine("h edge", 100.0050, f'1.2.3.4 "POST /v1/tasks HTTP/1.1" 202 286 0.005 rid={rid} upstream=x')
    router = LogLine("h router", 100.0052, f'1.2.3.5 "POST /v1/tasks HTTP/1.1" 202 286 0.004 rid={rid} upstream=y')
    hops = follow([app, router, edge], {rid}, set())
    assert [h.line.where for h in hops] == ["h edge", "h router", "h api-green"]
    # The application's line with an earlier start estimate than the edge's (99.9995 against
    # 100.0000: its pipe, its own clock of the request): still the callee.
    late_app = LogLine("h api-green", 100.0040, '{"msg": "request", "request_id": "%s", "latency_ms": 4.5}' % rid)
    assert [h.line.where for h in follow([late_app, router, edge], {rid}, set())] == ["h edge", "h router", "h api-green"]
