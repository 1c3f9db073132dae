"""`make status`'s queue line for the task platform (shipyard/components/taskplatform/status.py)."""

from shipyard.components.taskplatform.status import queue_line


def test_the_queue_line_gives_totals_and_each_kind_with_work():
    stats = {"total": {"queued": 3, "oldest_queued_s": 31.4, "scheduled": 1, "running": 1, "dead": 2},
             "kinds": {"sleep": {"queued": 2, "oldest_queued_s": 31.4, "scheduled": 1, "running": 1, "dead": 0},
                       "checksum": {"queued": 1, "oldest_queued_s": 2.0, "scheduled": 0, "running": 0, "dead": 2},
                       "smoke": {"queued": 0, "oldest_queued_s": 0.0, "scheduled": 0, "running": 0, "dead": 0}}}
    assert queue_line(stats) == ("queue: 3 queued (oldest 31 s), 1 scheduled, 1 running, 2 dead; "
                                 "per kind queued/running/dead: checksum 1/0/2, sleep 2/1/0")


def test_the_queue_line_gives_every_queue_depth_oldest_running_and_dead_before_the_kinds():
    stats = {"total": {"queued": 5, "oldest_queued_s": 40.2, "scheduled": 0, "running": 3, "dead": 1},
             "queues": {"reports": {"queued": 5, "oldest_queued_s": 40.2, "scheduled": 0, "running": 2, "dead": 0},
                        "default": {"queued": 0, "oldest_queued_s": 0.0, "scheduled": 0, "running": 1, "dead": 1}},
             "kinds": {"report": {"queued": 5, "oldest_queued_s": 40.2, "scheduled": 0, "running": 2, "dead": 0},
                       "checksum": {"queued": 0, "oldest_queued_s": 0.0, "scheduled": 0, "running": 1, "dead": 1}}}
    assert queue_line(stats) == ("queue: 5 queued (oldest 40 s), 0 scheduled, 3 running, 1 dead; "
                                 "per queue depth/oldest/running/dead: default 0/0s/1/1, reports 5/40s/2/0; "
                                 "per kind queued/running/dead: checksum 0/1/1, report 5/2/0")


def test_an_empty_queue_says_so_without_kinds():
    stats = {"total": {"queued": 0, "oldest_queued_s": 0.0, "scheduled": 0, "running": 0, "dead": 0}, "kinds": {}}
    assert queue_line(stats) == "queue: 0 queued (oldest 0 s), 0 scheduled, 0 running, 0 dead"
