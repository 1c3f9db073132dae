"""`make status`'s lines for the task platform (shipyard/components/taskplatform/status.py): the
queue on the live worker's row, and each API/worker container's Vault lease."""

import json
from types import SimpleNamespace

import pytest

from shipyard.components.taskplatform import LEASE_FILE
from shipyard.components.taskplatform.status import describe, describe_lease, lease_lines, queue_line


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


# --- each API/worker container's Vault lease (the keeper's lease.json) ---------------------------

NOW = 1_700_000_000.0  # 22:13:20Z


def _lease(**changes) -> dict:
    """lease.json as the keeper writes it (services/taskplatform/db_credentials.py: status_document)."""
    return {"username": "v-approle-tasks_ap-Abc123", "lease_ttl_s": 3600, "lease_expires_at": NOW + 2712,
            "token_expires_at": NOW + 2999, "generation": 3, "failing": 0, "errors_total": 0, "last_error": None,
            "updated_at": NOW - 10} | changes


def test_a_held_lease_says_user_both_ends_and_generation_and_no_warning():
    assert lease_lines(_lease(), NOW) == [
        "vault: user v-approle-tasks_ap-Abc123, lease ends in 2712s (at 22:58:32Z), "
        "token ends in 2999s (at 23:03:19Z), generation 3"]


@pytest.mark.parametrize("changes, warning", [
    ({"lease_expires_at": NOW + 899}, "WARNING vault: 899s left of the lease's 3600s (under a quarter; "
                                      "the keeper renews at half): renewals are not getting through"),
    ({"lease_expires_at": NOW - 30}, "WARNING vault: the PostgreSQL lease of v-approle-tasks_ap-Abc123 ended 30s "
                                     "ago and no new one came: new connections are refused, readiness fails "
                                     "(is Vault reachable and unsealed? make vault-status)"),
    ({"token_expires_at": NOW - 5}, "WARNING vault: the token ended 5s ago: the keeper must log in again"),
    ({"failing": 4, "errors_total": 9, "last_error": {"operation": "renew_lease", "at": NOW - 2,
                                                       "reason": "ConnectionError: Connection refused"}},
     "WARNING vault: 4 call(s) to Vault failed in a row (9 since start); last: renew_lease at 22:13:18Z: "
     "ConnectionError: Connection refused"),
], ids=["last-quarter", "lease-ended", "token-ended", "failing"])
def test_a_lease_in_trouble_gets_a_warning_line(changes, warning):
    lines = lease_lines(_lease(**changes), NOW)
    assert lines[0].startswith("vault: user v-approle-tasks_ap-Abc123, ")
    assert lines[1:] == [warning]


def test_an_ended_lease_says_when_in_its_first_line():
    assert "lease ENDED at 22:12:50Z" in lease_lines(_lease(lease_expires_at=NOW - 30), NOW)[0]


def test_past_failures_alone_give_no_warning_once_calls_succeed_again():
    doc = _lease(errors_total=7, last_error={"operation": "kv", "at": NOW - 600, "reason": "VaultDown: sealed"})
    assert len(lease_lines(doc, NOW)) == 1


def test_a_container_without_lease_json_or_with_garbage_says_so():
    assert describe_lease(b"cat: /run/taskplatform-vault/lease.json: No such file", 1, NOW) == [
        "vault: no lease reported (no lease.json: an image from before it, or the keeper has not got its "
        "first credentials)"]
    assert describe_lease(b"{not json", 0, NOW) == ["vault: lease.json unreadable"]


class FakeContainer:
    """What the hook uses of a docker SDK container: a name, labels, status, exec_run and its client."""

    def __init__(self, name: str, service: str, answers: dict, engine):
        self.name, self.status, self.client = name, "running", engine
        self.labels = {"com.docker.compose.project": "shipyard-ci", "com.docker.compose.service": service}
        self.answers, self.ran = answers, []

    def exec_run(self, argv):
        self.ran.append(argv)
        output, code = self.answers.get(tuple(argv), (b"", 1))
        return SimpleNamespace(output=output, exit_code=code)


class FakeEngine:
    def __init__(self):
        self.all = []
        self.containers = SimpleNamespace(list=self._list)

    def _list(self, filters, ignore_removed=False):
        wanted = set(filters["label"])
        return [c for c in self.all if {f"{k}={v}" for k, v in c.labels.items()} >= wanted]

    def info(self):
        return {"SystemTime": "2023-11-14T22:13:20.123456789Z"}  # NOW, the host's clock


def _settings(backend: str):
    return SimpleNamespace(secrets=SimpleNamespace(backend=backend))


def test_status_gives_each_api_and_worker_container_its_lease_under_vault():
    engine = FakeEngine()
    read = ("cat", LEASE_FILE)
    stats = {"total": {"queued": 0, "oldest_queued_s": 0.0, "scheduled": 0, "running": 0, "dead": 0}, "kinds": {}}
    api = FakeContainer("shipyard-ci-api-blue-1", "api-blue", {
        read: (json.dumps(_lease()).encode(), 0),
        ("taskplatform", "queue-stats"): (json.dumps(stats).encode(), 0)}, engine)
    workers = [FakeContainer(f"shipyard-ci-worker-blue-{n}", "worker-blue", {
        read: (json.dumps(_lease(username=f"v-worker-{n}", lease_expires_at=NOW + 100 * n)).encode(), 0)}, engine)
        for n in (1, 2)]
    vault_server = FakeContainer("shipyard-ci-vault-1", "vault-1", {}, engine)
    engine.all = [api, *workers, vault_server]
    # The view gives the first container of each instance; the hook finds a scaled worker's replicas.
    out = describe(_settings("vault"), {"api-blue": api, "worker-blue": workers[0]})
    assert out["shipyard-ci-api-blue-1"].split("\n") == ["", lease_lines(_lease(), NOW)[0]]
    first, second = (out[f"shipyard-ci-worker-blue-{n}"].split("\n") for n in (1, 2))
    assert first[0] == second[0] == "queue: 0 queued (oldest 0 s), 0 scheduled, 0 running, 0 dead"
    assert first[1].startswith("vault: user v-worker-1, lease ends in 100s") and first[2].startswith("WARNING")
    assert second[1].startswith("vault: user v-worker-2, lease ends in 200s") and second[2].startswith("WARNING")
    assert vault_server.ran == []


def test_status_reads_no_lease_under_the_age_backend():
    engine = FakeEngine()
    api = FakeContainer("shipyard-ci-api-blue-1", "api-blue", {}, engine)
    engine.all = [api]
    assert describe(_settings("age"), {"api-blue": api}) == {}
    assert api.ran == []
