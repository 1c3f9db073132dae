"""The sync client against the real API and a worker: every operation, and the API's refusals
as typed errors carrying the API's own error body."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from shipyard_tasks import (Client, Conflict, Forbidden, InvalidRequest, NewTask, NotFound, Unauthorized, WaitTimeout,
                            Webhook)
from conftest import FAST


def test_a_created_task_runs_and_the_wait_returns_it_finished(client, worker):
    created = client.create_task("checksum", {"a": 1})
    assert created.status == "queued" and created.kind == "checksum" and created.payload == {"a": 1}
    done = client.wait_for_task(created.id, timeout=30)
    assert done.status == "succeeded" and done.finished
    assert set(done.result) == {"sha256"} and done.attempts == 1
    assert client.get_task(created.id) == done


def test_an_idempotency_key_makes_a_second_create_return_the_first_task(client):
    key = f"order-{uuid.uuid4().hex}"
    first = client.create_task("checksum", {"n": 1}, idempotency_key=key)
    again = client.create_task("checksum", {"n": 1}, idempotency_key=key)
    assert again.id == first.id
    with pytest.raises(Conflict) as refused:
        client.create_task("checksum", {"n": 2}, idempotency_key=key)
    assert refused.value.code == "idempotency_key_reused" and refused.value.request_id


def test_creates_without_a_key_are_distinct_tasks(client):
    assert client.create_task("checksum").id != client.create_task("checksum").id


def test_a_delayed_task_is_scheduled_and_can_be_cancelled_once(client):
    task = client.create_task("checksum", delay_seconds=600)
    assert task.status == "scheduled" and task.run_after is not None
    assert task.run_after - task.created_at >= dt.timedelta(seconds=599)
    assert client.cancel_task(task.id).status == "cancelled"
    with pytest.raises(Conflict) as refused:
        client.cancel_task(task.id)
    assert refused.value.status == 409 and refused.value.code == "conflict" and "cancelled" in refused.value.message


def test_run_at_schedules_the_task_at_that_instant(client):
    at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(hours=1)
    task = client.create_task("checksum", run_at=at)
    # The API keeps run_at as a delay from its clock (schemas.delay_of): the time it stores may
    # differ from the one sent by the request's own time.
    assert task.status == "scheduled" and abs(task.run_after - at) < dt.timedelta(seconds=1)


def test_a_naive_run_at_or_both_times_are_refused_before_sending(client):
    with pytest.raises(ValueError, match="time zone"):
        client.create_task("checksum", run_at=dt.datetime.now())
    with pytest.raises(ValueError, match="not both"):
        client.create_task("checksum", delay_seconds=1, run_at=dt.datetime.now(dt.timezone.utc))


def test_the_wait_raises_with_the_task_as_last_seen_when_time_is_up(client):
    task = client.create_task("checksum", delay_seconds=600)
    with pytest.raises(WaitTimeout) as timed_out:
        client.wait_for_task(task.id, timeout=0.3)
    assert timed_out.value.task.id == task.id and timed_out.value.task.status == "scheduled"
    assert "still scheduled after 0.3 s" in str(timed_out.value)


def test_a_dead_task_is_re_driven_by_retry(client, worker):
    task = client.create_task("fail", {"always": True})
    dead = client.wait_for_task(task.id, timeout=30)
    assert dead.status == "dead" and dead.attempts == dead.max_attempts and dead.error
    again = client.retry_task(task.id)
    assert again.id == task.id and again.status == "queued" and again.attempts == 0
    with pytest.raises(Conflict):
        client.retry_task(client.create_task("checksum", delay_seconds=600).id)


def test_iter_tasks_follows_the_cursor_over_every_page_newest_first(client):
    made = [client.create_task("checksum", {"i": i}, delay_seconds=600).id for i in range(5)]
    client.create_task("sleep", {"seconds": 0}, delay_seconds=600)  # another kind, filtered out below
    listed = [task.id for task in client.iter_tasks(kind="checksum", page_size=2)]
    assert listed == made[::-1]
    first_page = client.list_tasks(kind="checksum", limit=2)
    assert len(first_page.items) == 2 and first_page.next_cursor
    assert len([t for t in client.iter_tasks(status="scheduled", page_size=4)]) == 6
    assert list(client.iter_tasks(status="queued")) == []


def test_the_apis_refusals_are_typed_and_carry_its_error_body(client, api_url):
    with pytest.raises(NotFound) as missing:
        client.get_task(str(uuid.uuid4()))
    assert (missing.value.status, missing.value.code) == (404, "not_found") and len(missing.value.request_id) == 32
    with pytest.raises(InvalidRequest) as invalid:
        client.create_task("no-such-kind")
    assert invalid.value.status == 422 and "checksum" in invalid.value.message  # names the known kinds
    with pytest.raises(InvalidRequest) as foreign_cursor:
        client.list_tasks(cursor="not-a-cursor")
    assert (foreign_cursor.value.status, foreign_cursor.value.code) == (400, "invalid_cursor")
    with Client(api_url, "not-a-token", retry=FAST) as stranger, pytest.raises(Unauthorized) as refused:
        stranger.get_task(str(uuid.uuid4()))
    assert refused.value.code == "unauthorized"


def test_an_id_with_path_characters_cannot_reach_another_route(client):
    with pytest.raises(NotFound):
        client.get_task("../api-keys")


def test_a_credential_without_the_scope_is_forbidden_naming_it(platform, api_url, tenant):
    with Client(api_url, platform.token(tenant, scopes=("tasks:read",)), retry=FAST) as reader:
        assert reader.list_tasks().items == []
        with pytest.raises(Forbidden) as refused:
            reader.create_task("checksum")
    assert "tasks:write" in refused.value.message


def test_an_admin_creates_lists_and_revokes_api_keys_that_work_as_credentials(platform, api_url, tenant):
    with Client(api_url, platform.token(tenant, scopes=("admin",)), retry=FAST) as admin:
        created = admin.create_api_key("ci", ["tasks:read", "tasks:write"], expires_in_seconds=3600)
        assert created.key.startswith(f"sy_{created.id}_") and created.scopes == ["tasks:read", "tasks:write"]
        assert created.expires_at is not None and created.revoked_at is None
        with Client(api_url, created.key, retry=FAST) as by_key:
            task = by_key.create_task("checksum")
            assert task.tenant == tenant  # the key acts for its admin's tenant
            listed = admin.list_api_keys()
            assert [k.id for k in listed] == [created.id] and not hasattr(listed[0], "key")
            revoked = admin.revoke_api_key(created.id)
            assert revoked.revoked_at is not None
            assert admin.revoke_api_key(created.id).revoked_at == revoked.revoked_at  # again: no change
            with pytest.raises(Unauthorized):  # one API process: the revoking one forgets it at once
                by_key.get_task(task.id)
        with pytest.raises(NotFound):
            admin.revoke_api_key("0123456789abcdef")


def test_webhooks_are_created_read_listed_and_their_deliveries_paged(client):
    """A public literal address (nothing resolves, nothing is sent: no task of the tenant changes)."""
    created = client.create_webhook("https://93.184.215.14/hooks?x=1", ["task.dead", "task.succeeded"],
                                    description="ops")
    assert created.secret.startswith("whsec_") and created.events == ["task.dead", "task.succeeded"]
    assert client.get_webhook(created.id) == Webhook(**created.model_dump(exclude={"secret"}))
    assert [w.id for w in client.list_webhooks(limit=5).items] == [created.id]
    assert client.list_deliveries(created.id).items == []
    with pytest.raises(NotFound):
        client.redeliver(created.id, created.id)
    with pytest.raises(InvalidRequest) as refused:
        client.create_webhook("http://127.0.0.1:9/", ["task.dead"])
    assert refused.value.code == "url_not_allowed" and "loopback" in refused.value.message


def test_a_batch_is_created_in_order_all_or_nothing_and_replayed_by_its_keys(client, worker):
    batch = client.create_tasks([NewTask("checksum", {"n": 1}, idempotency_key="b-1"),
                                 NewTask("checksum", {"n": 2}, priority=8),
                                 NewTask("checksum", delay_seconds=600)])
    assert [item.created for item in batch.items] == [True, True, True]
    assert [t.status for t in batch.tasks] == ["queued", "queued", "scheduled"] and batch.tasks[1].priority == 8
    assert client.wait_for_task(batch.tasks[0].id, timeout=30).status == "succeeded"
    again = client.create_tasks([NewTask("checksum", {"n": 1}, idempotency_key="b-1")])
    assert again.items[0].created is False and again.tasks[0].id == batch.tasks[0].id
    with pytest.raises(InvalidRequest) as refused:
        client.create_tasks([NewTask("checksum", idempotency_key="b-2"), NewTask("sleep", {"seconds": "x"})])
    assert refused.value.code == "invalid_request" and "tasks.1" in refused.value.message
    with pytest.raises(Conflict) as reused:
        client.create_tasks([NewTask("checksum", idempotency_key="b-3"), NewTask("checksum", idempotency_key="b-1")])
    assert reused.value.code == "idempotency_key_reused" and reused.value.message.startswith("tasks.1.")
    assert len(client.list_tasks().items) == 3, "the refused batches made nothing"
    with pytest.raises(ValueError, match="one task at least"):
        client.create_tasks([])


def test_a_callback_url_needs_the_callback_secret_which_rotates(client):
    """A public literal address, and a task that never ends within the test: nothing is sent."""
    url = "https://93.184.215.14/callbacks?x=1"
    with pytest.raises(Conflict) as missing:
        client.create_task("checksum", callback_url=url, delay_seconds=3600)
    assert missing.value.code == "callback_secret_missing"
    first = client.set_callback_secret()
    assert first.secret.startswith("whsec_") and first.previous_secret_expires_at is None
    task = client.create_task("checksum", callback_url=url, delay_seconds=3600)
    assert task.status == "scheduled"
    batch = client.create_tasks([NewTask("checksum", callback_url=url, delay_seconds=3600)])
    assert batch.items[0].created
    rotated = client.set_callback_secret(overlap_seconds=60)
    assert rotated.secret != first.secret and rotated.previous_secret_expires_at is not None
    assert client.list_callback_deliveries().items == []
    with pytest.raises(NotFound):
        client.redeliver_callback(task.id)
    with pytest.raises(InvalidRequest) as refused:
        client.create_task("checksum", callback_url="http://10.0.0.1/cb")
    assert refused.value.code == "url_not_allowed"


def test_a_webhook_secret_is_rotated_with_an_overlap(client):
    created = client.create_webhook("https://93.184.215.14/hooks", ["task.dead"])
    rotated = client.rotate_webhook_secret(created.id, overlap_seconds=120)
    assert rotated.secret != created.secret and rotated.id == created.id
    assert rotated.previous_secret_expires_at is not None
    assert client.get_webhook(created.id).previous_secret_expires_at == rotated.previous_secret_expires_at
    assert client.rotate_webhook_secret(created.id).secret not in (created.secret, rotated.secret)
    with pytest.raises(NotFound):
        client.rotate_webhook_secret("0b6f1c8e-6d0e-4f4e-9d55-6a2b9b3c1a10")
