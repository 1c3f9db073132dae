"""The shipper's counters, for real: Debian's rsyslogd 8.2302 with ci's rendered rsyslog.conf
(impstats as JSON to omprog, logship-exporter serving /metrics) shipping a container's lines to
the stand-in store on loopback; the store stopped, then back. What the alerts of
rules/logs.yml read must move as they assume (docs/logs.md, "Metrics")."""

from __future__ import annotations

import time

from tests.logship.conftest import EngineFile, count, free_port, metrics, wait_for

STORE = 'rsyslog_queue_size{queue="store queue"}'
SUSPENDED = 'rsyslog_action_suspended_total{action="store"}'
PROCESSED = 'rsyslog_action_processed_total{action="store"}'
CHECKS = "rsyslog_omelasticsearch_failed_checkconn_total"


def _lines(n: int, first: int = 0) -> list[dict]:
    return [{"level": "info", "logger": "api", "msg": f"line {i}", "request_id": f"r-{i}", "status": 200}
            for i in range(first, first + n)]


def test_the_counters_follow_the_store_away_and_back(start_store, shipper_conf, start_shipper, tmp_path):
    store_port, store = start_store()
    wait_for("the store's port open", lambda: count(store_port) == 0)
    metrics_port = free_port()
    shipper = start_shipper(shipper_conf(store_port, metrics_port))
    api = EngineFile(tmp_path / "containers", "api-blue")

    # 1. Lines go through; processed counts them, the queue empties, the stats are fresh.
    api.write(_lines(50))
    wait_for("50 lines in the store", lambda: count(store_port) == 50)
    seen = wait_for("processed counting 50 and the queue empty",
                    lambda: (m := metrics(metrics_port)).get(PROCESSED, 0) >= 50 and m.get(STORE) == 0 and m)
    assert seen.get(CHECKS, 0) == 0
    assert seen['logship_queue_capacity{queue="store queue"}'] == 5000
    assert seen["logship_buffer_limit_bytes"] == 512 * 1024 * 1024 and seen["logship_store_rejected_bytes"] == 0
    assert time.time() - seen["logship_stats_last_timestamp_seconds"] < 10
    assert seen['rsyslog_queue_discarded_full_total{queue="store queue"}'] == 0

    # 2. The store stops: lines queue up, each check of the store fails and is counted.
    store.terminate()
    store.wait(timeout=15)
    api.write(_lines(30, first=50))
    away = wait_for("30 lines queued and two failed checks of the store",
                    lambda: (m := metrics(metrics_port)).get(STORE, 0) >= 30 and m.get(CHECKS, 0) >= 2 and m,
                    timeout_s=60)
    assert away[PROCESSED] >= 80
    # rsyslog 8.2302 does not count omelasticsearch's retries as a suspension: the alert reads
    # the failed checks (LogStoreUnreachable), not this.
    print(f"store away: {away[STORE]:.0f} queued, {away[CHECKS]:.0f} failed checks, "
          f"suspended {away.get(SUSPENDED)}")
    wait_for("the checks going on failing", lambda: metrics(metrics_port)[CHECKS] > away[CHECKS], timeout_s=60)

    # 3. The store back (empty: the stand-in keeps nothing): the queue drains into it, nothing lost.
    store_port, store = start_store(store_port)
    wait_for("the 30 queued lines in the store", lambda: count(store_port) == 30, timeout_s=90)
    back = wait_for("the queue empty", lambda: (m := metrics(metrics_port))[STORE] == 0 and m)
    assert back['rsyslog_queue_discarded_full_total{queue="store queue"}'] == 0
    assert back['rsyslog_action_failed_total{action="store"}'] == 0
    assert shipper.poll() is None


def test_a_document_the_store_refuses_is_counted_in_the_rejected_file(start_store, shipper_conf, start_shipper,
                                                                      tmp_path):
    store_port, _ = start_store()
    wait_for("the store's port open", lambda: count(store_port) == 0)
    metrics_port = free_port()
    start_shipper(shipper_conf(store_port, metrics_port))
    api = EngineFile(tmp_path / "containers", "api-blue")
    # status is a short in the template's mapping: a word there is refused (mapper_parsing_exception).
    api.write([{"level": "info", "msg": "ok", "status": 200},
               {"level": "info", "msg": "refused", "status": "not-a-number"}])
    wait_for("the good line in the store", lambda: count(store_port) == 1)
    seen = wait_for("the refused line in the rejected file",
                    lambda: (m := metrics(metrics_port)).get("logship_store_rejected_bytes", 0) > 0 and m)
    assert seen['rsyslog_action_failed_total{action="store"}'] == 0
    assert (tmp_path / "state/store-rejected.json").stat().st_size == seen["logship_store_rejected_bytes"]
