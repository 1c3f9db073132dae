"""The async client against the real API and a worker: the same operations as the sync one."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from shipyard_tasks import AsyncClient, Conflict, NewTask, NotFound, Unauthorized, WaitTimeout
from conftest import FAST

pytestmark = pytest.mark.anyio


async def test_tasks_created_concurrently_all_run_and_are_waited_for(async_client, worker):
    created = await asyncio.gather(*(async_client.create_task("checksum", {"i": i}) for i in range(4)))
    done = await asyncio.gather(*(async_client.wait_for_task(t.id, timeout=30) for t in created))
    assert [t.status for t in done] == ["succeeded"] * 4
    assert len({t.result["sha256"] for t in done}) == 4


async def test_pagination_cancel_and_the_wait_timeout(async_client):
    made = [(await async_client.create_task("checksum", {"i": i}, delay_seconds=600)).id for i in range(3)]
    assert [t.id async for t in async_client.iter_tasks(page_size=2)] == made[::-1]
    with pytest.raises(WaitTimeout):
        await async_client.wait_for_task(made[0], timeout=0.2)
    assert (await async_client.cancel_task(made[0])).status == "cancelled"
    with pytest.raises(Conflict):
        await async_client.cancel_task(made[0])


async def test_a_dead_task_is_re_driven(async_client, worker):
    task = await async_client.create_task("fail", {"always": True})
    assert (await async_client.wait_for_task(task.id, timeout=30)).status == "dead"
    assert (await async_client.retry_task(task.id)).attempts == 0


async def test_idempotency_and_errors(async_client):
    key = uuid.uuid4().hex
    first = await async_client.create_task("checksum", idempotency_key=key)
    assert (await async_client.create_task("checksum", idempotency_key=key)).id == first.id
    with pytest.raises(NotFound) as missing:
        await async_client.get_task(str(uuid.uuid4()))
    assert missing.value.code == "not_found" and missing.value.request_id


async def test_api_keys(platform, api_url, tenant):
    async with AsyncClient(api_url, platform.token(tenant, scopes=("admin",)), retry=FAST) as admin:
        created = await admin.create_api_key("reader", ["tasks:read"])
        assert created.expires_at is None
        async with AsyncClient(api_url, created.key, retry=FAST) as by_key:
            assert (await by_key.list_tasks()).items == []
            assert [k.name for k in await admin.list_api_keys()] == ["reader"]
            await admin.revoke_api_key(created.id)
            with pytest.raises(Unauthorized):
                await by_key.list_tasks()


async def test_a_batch_and_the_callback_secret(async_client):
    batch = await async_client.create_tasks(NewTask("checksum", {"i": i}, delay_seconds=600) for i in range(3))
    assert [t.payload["i"] for t in batch.tasks] == [0, 1, 2] and all(item.created for item in batch.items)
    secret = await async_client.set_callback_secret(overlap_seconds=0)
    assert secret.secret.startswith("whsec_")
    assert (await async_client.list_callback_deliveries(limit=5)).items == []
