"""A worker's per-queue bookkeeping (``taskplatform.lanes``) and the queue settings of the runtime
config, without servers: the token bucket against a fake clock, the backlog's order, the streams
a queue is read from, and which queue names a config may carry."""

from __future__ import annotations

import pytest

from taskplatform import kinds, lanes, queue
from taskplatform.runtime_config import ConfigRejected, RuntimeConfig, validate_document
from taskplatform_testing.servers import RUNTIME_DEFAULTS


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def starts_in(bucket: lanes.TokenBucket, clock: Clock, rate: float | None, seconds: float, step: float = 0.01) -> int:
    """How many starts the bucket allows over ``seconds``, asked every ``step``."""
    started, end = 0, clock.now + seconds
    while clock.now < end:
        while bucket.wait(rate) == 0:
            bucket.take(rate)
            started += 1
            if rate is None and started > 1000:
                return started
        clock.now += step
    return started


@pytest.mark.parametrize("rate", [0.5, 4, 50, 1000])
def test_the_bucket_starts_at_most_the_rate_plus_its_burst(rate):
    clock = Clock()
    bucket = lanes.TokenBucket(clock)
    started = starts_in(bucket, clock, rate, 10)
    assert rate * 10 * 0.95 <= started <= rate * 10 + lanes.TokenBucket.capacity(rate) + 1


def test_a_rate_change_applies_at_the_next_start_and_none_is_no_limit():
    clock = Clock()
    bucket = lanes.TokenBucket(clock)
    assert starts_in(bucket, clock, 2, 5) <= 11
    assert starts_in(bucket, clock, 20, 5) >= 95
    assert starts_in(bucket, clock, None, 0.02) > 1000


def test_the_backlog_starts_the_highest_priority_first_then_first_come():
    lane = lanes.Lane("reports")
    for task_id, priority in (("a", 1), ("b", 5), ("c", 9), ("d", 5), ("e", 1)):
        lane.add(lanes.Waiting(None, task_id, priority))
    assert [lane.pop().task_id for _ in range(len(lane))] == ["c", "b", "d", "a", "e"]


def test_a_queue_is_read_highest_band_first_the_colour_beside_each_band():
    assert lanes.Lane("reports", "green").streams == [
        "tasks:queue:reports:high", "tasks:queue:reports:high:green", "tasks:queue:reports:normal",
        "tasks:queue:reports:normal:green", "tasks:queue:reports:low", "tasks:queue:reports:low:green"]
    # The default queue's normal band is the stream of the releases before queues.
    assert queue.stream_for("default", 5) == queue.STREAM and queue.stream_for("default", 6, "blue") == "tasks:stream:blue"
    assert [lanes.priority_of_stream(s) for s in lanes.Lane("high-low").streams] == [7, 4, 0]
    assert lanes.Lane("x").streams_above(4) == ["tasks:queue:x:high"]
    assert lanes.Lane("x").streams_above(9) == []


@pytest.mark.parametrize("priority, band", [(0, "low"), (3, "low"), (4, "normal"), (6, "normal"), (7, "high"),
                                            (9, "high")])
def test_priority_bands(priority, band):
    assert queue.band_of(priority) == band


def test_an_unknown_queue_is_refused_by_the_deploy_and_kept_by_an_instance():
    doc = dict(RUNTIME_DEFAULTS, queues={"nosuch": {"concurrency": 2}})
    with pytest.raises(ConfigRejected, match="unknown queues \\['nosuch'\\]"):
        validate_document(doc)
    assert RuntimeConfig.model_validate(doc).concurrency_of("nosuch") == 2  # a newer release's queue
    config = validate_document(dict(RUNTIME_DEFAULTS, queues={"default": {"rate_per_second": 3}}))
    assert (config.concurrency_of("default"), config.rate_of("default")) == (RUNTIME_DEFAULTS["worker_concurrency"], 3)


@pytest.mark.parametrize("bad", [{"concurrency": 0}, {"concurrency": 257}, {"rate_per_second": 0},
                                 {"rate_per_second": 10_001}, {"slots": 2}])
def test_queue_settings_out_of_bounds_are_refused(bad):
    with pytest.raises(ConfigRejected):
        validate_document(dict(RUNTIME_DEFAULTS, queues={"default": bad}))


def test_a_kind_declares_a_valid_queue():
    with pytest.raises(kinds.KindError, match="queue 'Bad:Queue'"):
        kinds.kind("queue-test", payload=None, queue="Bad:Queue")
