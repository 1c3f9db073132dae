"""`taskplatform queue-stats` (what `make status` shows of the queue) against a PostgreSQL of its
own with the platform's schema: no worker takes the rows this test puts there."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from taskplatform import cli, migrate
from taskplatform.settings import ProcessSettings
from taskplatform_testing.servers import Postgres


class _Given:
    def __init__(self, password: str):
        self.password = password

    def get(self, name: str) -> str:
        return self.password


@pytest.fixture(scope="module")
def database():
    root = Path(tempfile.mkdtemp(prefix="queue-stats-"))
    os.chmod(root, 0o755)  # PostgreSQL runs as the postgres user
    server = Postgres(root / "pg").start()
    settings = ProcessSettings(pg_host="127.0.0.1", pg_port=server.port, pg_user=server.user,
                               pg_database=server.database)
    migrate.upgrade(settings, _Given(server.password))
    yield server, settings
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


def _insert(conn, kind: str, status: str, queued_ago_s: float = 0, queue: str | None = None) -> None:
    conn.execute("INSERT INTO tasks (id, tenant, kind, payload, status, attempts, max_attempts, queued_at, run_after, "
                 "queue) VALUES (gen_random_uuid(), 't', %s, '{}', %s, 0, 3, "
                 "clock_timestamp() - make_interval(secs => %s), clock_timestamp(), %s)",
                 (kind, status, queued_ago_s, queue))


def test_it_counts_per_kind_what_waits_runs_and_died_and_the_oldest_wait(database, capsys, monkeypatch):
    server, settings = database
    with psycopg.connect(host="127.0.0.1", port=server.port, dbname=server.database, user=server.user,
                         password=server.password, autocommit=True) as conn:
        empty = {"queued": 0, "scheduled": 0, "running": 0, "dead": 0, "oldest_queued_s": 0.0}
        assert cli_stats(monkeypatch, capsys, server) == {"queues": {"default": empty}, "kinds": {}, "total": empty}
        for status, ago in (("queued", 30), ("queued", 5), ("running", 0), ("dead", 0), ("succeeded", 0),
                            ("scheduled", 0)):
            _insert(conn, "sleep", status, ago)
        _insert(conn, "checksum", "queued", 2)
        _insert(conn, "checksum", "cancelled", 0)
    stats = cli_stats(monkeypatch, capsys, server)
    sleep, checksum = stats["kinds"]["sleep"], stats["kinds"]["checksum"]
    assert {k: v for k, v in sleep.items() if k != "oldest_queued_s"} == {"queued": 2, "scheduled": 1, "running": 1,
                                                                          "dead": 1}
    assert 30 <= sleep["oldest_queued_s"] < 60 and 2 <= checksum["oldest_queued_s"] < 30
    assert (checksum["queued"], checksum["dead"]) == (1, 0)  # the cancelled one is finished: not counted
    assert stats["total"]["queued"] == 3 and stats["total"]["oldest_queued_s"] == sleep["oldest_queued_s"]
    # Per queue: a row without one (an older release's) counts in its kind's, here the default.
    assert stats["queues"] == {"default": {key: stats["total"][key] for key in stats["total"]}}


def test_it_counts_per_queue_the_depth_the_oldest_wait_what_runs_and_died(database, capsys, monkeypatch):
    server, _ = database
    with psycopg.connect(host="127.0.0.1", port=server.port, dbname=server.database, user=server.user,
                         password=server.password, autocommit=True) as conn:
        conn.execute("DELETE FROM tasks")
        for status, ago in (("queued", 40), ("queued", 1), ("running", 0), ("dead", 0)):
            _insert(conn, "sleep", status, ago, queue="reports")
        _insert(conn, "checksum", "queued", 3)
    stats = cli_stats(monkeypatch, capsys, server)
    reports, default = stats["queues"]["reports"], stats["queues"]["default"]
    assert (reports["queued"], reports["running"], reports["dead"]) == (2, 1, 1) and 40 <= reports["oldest_queued_s"] < 70
    assert (default["queued"], default["running"], default["dead"]) == (1, 0, 0) and 3 <= default["oldest_queued_s"] < 30
    assert stats["kinds"]["sleep"]["queued"] == 2 and stats["total"]["queued"] == 3


def cli_stats(monkeypatch, capsys, server) -> dict:
    """`taskplatform queue-stats` as the container runs it: settings from the environment, the
    password from the secrets directory."""
    secrets = Path(tempfile.mkdtemp(prefix="queue-stats-secrets-"))
    (secrets / "postgres_password").write_text(server.password + "\n")
    for name, value in {"TASKS_PG_HOST": "127.0.0.1", "TASKS_PG_PORT": str(server.port),
                        "TASKS_PG_DATABASE": server.database, "TASKS_PG_USER": server.user,
                        "TASKS_SECRETS_DIR": str(secrets)}.items():
        monkeypatch.setenv(name, value)
    try:
        assert cli.main(["queue-stats"]) == 0
        return json.loads(capsys.readouterr().out)
    finally:
        shutil.rmtree(secrets, ignore_errors=True)
