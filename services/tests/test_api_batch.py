"""``POST /v1/tasks:batch`` through a real API process: all or nothing in one transaction (one
refused item — by the schema, the runtime config, the time or its idempotency key — creates
none, and the error names it), per-item idempotency (a replayed batch creates nothing new; two
batches sharing keys in opposite orders do not deadlock), the runtime bound, and the rate limit
counting each task."""

from __future__ import annotations

import concurrent.futures
import datetime as dt

import pytest

from test_api import assert_error


def batch(tenant, *items: dict, **extra):
    return tenant.session.post(f"{tenant.base}/v1/tasks:batch", json={"tasks": list(items)}, timeout=30, **extra)


def task_ids(tenant) -> set[str]:
    page = tenant.session.get(f"{tenant.base}/v1/tasks", params={"limit": 100}, timeout=10).json()
    return {task["id"] for task in page["items"]}


def test_a_batch_creates_every_task_in_the_requests_order(tenant):
    answer = batch(tenant, {"kind": "checksum", "payload": {"n": 1}},
                   {"kind": "sleep", "payload": {"seconds": 0}, "priority": 8, "idempotency_key": "b"},
                   {"kind": "checksum", "delay_seconds": 3600})
    assert answer.status_code == 202, answer.text
    items = answer.json()["items"]
    assert [item["created"] for item in items] == [True, True, True]
    assert [item["task"]["kind"] for item in items] == ["checksum", "sleep", "checksum"]
    assert [item["task"]["status"] for item in items] == ["queued", "queued", "scheduled"]
    assert items[0]["task"]["payload"] == {"n": 1} and items[1]["task"]["priority"] == 8
    assert task_ids(tenant) == {item["task"]["id"] for item in items}
    for item in items:
        assert tenant.get(item["task"]["id"]).json()["tenant"] == tenant.name


@pytest.mark.parametrize("bad, where", [
    ({"kind": "sleep", "payload": {"seconds": "soon"}}, "tasks.1"),
    ({"kind": "no-such-kind"}, "tasks.1"),
    ({"kind": "checksum", "priority": 10}, "tasks.1"),
    ({"kind": "checksum", "run_at": "2026-12-05T09:30:00Z", "delay_seconds": 5}, "tasks.1"),
    ({"kind": "checksum", "idempotency_key": ""}, "tasks.1"),
    ({"kind": "checksum", "callback_url": "x\u0000"}, "tasks.1"),
], ids=["payload", "kind", "priority", "run_at and delay", "empty key", "NUL in the URL"])
def test_one_invalid_item_is_422_naming_it_and_nothing_is_created(tenant, bad, where):
    response = batch(tenant, {"kind": "checksum", "idempotency_key": "first"}, bad, {"kind": "checksum"})
    assert_error(response, 422, "invalid_request")
    assert f"body.{where}" in response.json()["message"], response.json()["message"]
    assert task_ids(tenant) == set()


def test_an_item_run_at_too_far_is_400_naming_it_and_nothing_is_created(tenant):
    far = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=400)).isoformat()
    response = batch(tenant, {"kind": "checksum"}, {"kind": "checksum"}, {"kind": "checksum", "run_at": far})
    assert_error(response, 400, "run_at_too_far")
    assert response.json()["message"].startswith("tasks.2.run_at is ")
    assert task_ids(tenant) == set()


def test_an_item_of_a_disabled_kind_is_409_naming_it_and_nothing_is_created(tenant, runtime_config):
    runtime_config(enabled_kinds=["checksum"])
    response = batch(tenant, {"kind": "checksum"}, {"kind": "sleep", "payload": {"seconds": 0}})
    assert_error(response, 409, "kind_disabled")
    assert response.json()["message"].startswith("tasks.1.task kind 'sleep' is disabled")
    assert task_ids(tenant) == set()


def test_a_replayed_batch_creates_nothing_new_and_answers_the_first_tasks(tenant):
    items = [{"kind": "checksum", "payload": {"n": n}, "idempotency_key": f"order-{n}"} for n in range(3)]
    first = batch(tenant, *items).json()["items"]
    again = batch(tenant, *reversed(items), {"kind": "checksum", "payload": {"n": 1.0}, "idempotency_key": "order-1"})
    assert again.status_code == 202, again.text
    replayed = again.json()["items"]
    assert [item["created"] for item in replayed] == [False] * 4
    assert [item["task"]["id"] for item in replayed] == [first[2]["task"]["id"], first[1]["task"]["id"],
                                                          first[0]["task"]["id"], first[1]["task"]["id"]]
    assert task_ids(tenant) == {item["task"]["id"] for item in first}
    # A single create under one of the keys is the same task too (the keys are the tenant's).
    single = tenant.create("checksum", {"n": 0}, key="order-0")
    assert single.json()["id"] == first[0]["task"]["id"] and single.headers["Idempotent-Replayed"] == "true"


def test_a_key_reused_for_another_task_refuses_the_batch_and_creates_none_of_it(tenant):
    made = tenant.create("checksum", {"n": 1}, key="taken").json()
    response = batch(tenant, {"kind": "checksum", "idempotency_key": "new-1"},
                     {"kind": "checksum", "payload": {"n": 2}, "idempotency_key": "taken"},
                     {"kind": "checksum"})
    assert_error(response, 409, "idempotency_key_reused")
    assert response.json()["message"].startswith("tasks.1.idempotency_key was used for a different task")
    assert task_ids(tenant) == {made["id"]}, "the batch's other tasks were rolled back"


def test_a_key_repeated_within_a_batch_is_one_task_or_a_409(tenant):
    same = batch(tenant, {"kind": "checksum", "idempotency_key": "k"}, {"kind": "checksum", "idempotency_key": "k"})
    assert same.status_code == 202, same.text
    first, second = same.json()["items"]
    assert (first["created"], second["created"]) == (True, False) and first["task"] == second["task"]
    other = batch(tenant, {"kind": "checksum", "idempotency_key": "j"},
                  {"kind": "checksum", "payload": {"x": 1}, "idempotency_key": "j"})
    assert_error(other, 409, "idempotency_key_reused")
    assert other.json()["message"].startswith("tasks.1.")
    assert task_ids(tenant) == {first["task"]["id"]}


def test_concurrent_batches_sharing_keys_make_each_task_once_without_deadlock(tenant):
    """Sent at once, in opposite orders: inserted in key order, the second waits for the first
    (and answers its tasks) instead of each holding a key the other needs."""
    items = [{"kind": "checksum", "payload": {"n": n}, "idempotency_key": f"race-{n:02}"} for n in range(30)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda order: batch(tenant, *order),
                                [items, items[::-1], items, items[::-1]]))
    assert [a.status_code for a in answers] == [202] * 4, [a.text for a in answers if a.status_code != 202]
    made = [item for answer in answers for item in answer.json()["items"] if item["created"]]
    assert len(made) == 30 and len(task_ids(tenant)) == 30


def test_a_batch_beyond_the_runtime_bound_is_400_and_creates_nothing(tenant, runtime_config):
    runtime_config(batch_max_tasks=3)
    assert batch(tenant, *[{"kind": "checksum"}] * 3).status_code == 202
    response = batch(tenant, *[{"kind": "checksum"}] * 4)
    assert_error(response, 400, "batch_too_large")
    assert "at most 3 (runtime config batch_max_tasks)" in response.json()["message"]
    assert len(task_ids(tenant)) == 3


def test_the_rate_limit_counts_each_task_of_a_batch(tenant, other_tenant, runtime_config):
    """Each test's tenant is new: its first request starts its count at 1 whatever the minute."""
    runtime_config(rate_limit_per_minute=5)
    # 7, not 6: refused even when a minute begins between the request's count and its tasks'.
    refused = batch(tenant, *[{"kind": "checksum"}] * 7)
    assert_error(refused, 429, "rate_limited")
    assert "a batch counts each task: this one 7" in refused.json()["message"] and refused.headers["Retry-After"]
    # Refused, the batch counted as one request: what is left of the minute is still there.
    assert tenant.create("checksum").status_code == 202
    assert len(task_ids(tenant)) == 1
    assert batch(other_tenant, *[{"kind": "checksum"}] * 5).status_code == 202


def test_a_batch_needs_tasks_write(api_url, platform):
    import requests

    token = platform.token("tenant-read-only", scopes=("tasks:read",))
    response = requests.post(f"{api_url}/v1/tasks:batch", json={"tasks": [{"kind": "checksum"}]},
                             headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert_error(response, 403, "forbidden")
    assert "tasks:write" in response.json()["message"]


def test_an_empty_batch_or_a_stray_field_is_422(tenant):
    assert_error(batch(tenant), 422, "invalid_request")
    assert_error(tenant.session.post(f"{tenant.base}/v1/tasks:batch", json={"tasks": [{"kind": "checksum"}], "x": 1},
                                     timeout=10), 422, "invalid_request")
