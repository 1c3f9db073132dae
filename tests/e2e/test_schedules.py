"""A schedule on the rolled-out environment, through the edge: every second fires exactly once —
one task per occurrence, none missed, none twice — while a release starts the other colour's
workers beside the live ones (two sets of firers), switches users and drains the old ones."""

from __future__ import annotations

import datetime as dt
import time

import psycopg
import pytest

from shipyard import secretstore
from shipyard.controller.releases import read_state
from shipyard.inventory import load_environment
from tests.drill_traffic import api_client

from .conftest import REPO, run_shipyard


@pytest.fixture(scope="module")
def settings(env_name):
    return load_environment(REPO, env_name)


def _database(settings):
    password = secretstore.load_or_create(REPO, settings.name)["postgres_password"].value
    return psycopg.connect(host="127.0.0.1", port=settings.ports.postgres, dbname=settings.postgres.database,
                           user=settings.postgres.user, password=password, autocommit=True, connect_timeout=5)


def _occurrences(settings, schedule_id: str) -> list[tuple[dt.datetime, str]]:
    with _database(settings) as conn:
        return conn.execute("SELECT occurrence_at, task_id::text FROM schedule_occurrences WHERE schedule_id = %s "
                            "ORDER BY occurrence_at", (schedule_id,)).fetchall()


def _wait_occurrences(settings, schedule_id: str, count: int, timeout_s: float = 60) -> list:
    deadline = time.monotonic() + timeout_s
    while len(found := _occurrences(settings, schedule_id)) < count:
        assert time.monotonic() < deadline, f"{len(found)} occurrences after {timeout_s} s, want {count}"
        time.sleep(0.5)
    return found


def test_a_schedule_fires_every_occurrence_once_across_a_release_switch(env_name, settings):
    client = api_client(settings)
    created = client.post(f"{client.base}/v1/schedules", json={
        "kind": "checksum", "payload": {"e2e": "schedule"}, "interval_seconds": 1, "catchup": "all"}, timeout=10)
    assert created.status_code == 201, created.text
    schedule_id = created.json()["id"]
    try:
        _wait_occurrences(settings, schedule_id, 3)
        before = read_state(settings)
        version = f"e2e-sched-{time.strftime('%H%M%S')}"
        released = run_shipyard("release", "--env", env_name, "--version", version,
                                env_extra={"SHIPYARD_RELEASE__WATCH_SECONDS": "5"})
        assert released.returncode == 0, released.stdout[-3000:] + released.stderr[-3000:]
        assert read_state(settings).live == before.idle
        upto = len(_occurrences(settings, schedule_id))
        _wait_occurrences(settings, schedule_id, upto + 3)  # fired by the new colour's workers alone
    finally:
        paused = client.post(f"{client.base}/v1/schedules/{schedule_id}/pause", timeout=10)
        assert paused.status_code == 200, paused.text
    fired = _occurrences(settings, schedule_id)
    times = [at for at, _ in fired]
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
    assert gaps and set(gaps) == {1.0}, f"occurrences not one per second: {gaps}"  # none missed, none twice
    tasks = [task for _, task in fired]
    assert len(set(tasks)) == len(tasks)
    # Each occurrence's task is a real task of the tenant, and each runs.
    deadline = time.monotonic() + 60
    while pending := {t for t in tasks if client.get(f"{client.base}/v1/tasks/{t}", timeout=10).json()["status"]
                      != "succeeded"}:
        assert time.monotonic() < deadline, f"{len(pending)} scheduled tasks not done in 60 s"
        time.sleep(0.5)
    client.delete(f"{client.base}/v1/schedules/{schedule_id}", timeout=10)
