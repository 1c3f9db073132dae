"""A tenant's tasks: create, read, list, cancel and re-drive (``/v1/tasks``). PostgreSQL holds
each task; Redis only carries its id to the workers, so a create or re-drive whose enqueue fails
still succeeds (the workers' reconciler enqueues it later).

No ``from __future__ import annotations`` here: the create endpoint's body type is made at start
from the loaded task kinds (``create_task_for``), and FastAPI reads it from the signature."""

import logging
import uuid
from typing import Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from taskplatform import gates, kinds, metrics, queue, store
from taskplatform.scopes import TASKS_READ, TASKS_WRITE, needs
from taskplatform.api_services import Services
from taskplatform.cursors import decode_cursor, encode_cursor
from taskplatform.deps import RateLimitedTenant, TaskColour, services_of
from taskplatform.errors import TENANT, ApiError, documented
from taskplatform.responses import Task, TaskPage, answer
from taskplatform.schemas import STORABLE_SCHEMAS, create_body, delay_of
from taskplatform.storable import unstorable_text

log = logging.getLogger("taskplatform.api")

TaskStatus = Literal["scheduled", "queued", "running", "retry_wait", "succeeded", "dead", "cancelled"]


def parse_id(task_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(task_id)
    except ValueError:
        raise ApiError(404, "not_found", "no such task") from None


async def enqueue(services: Services, task: dict, what: str, colour: str) -> None:
    """On the stream of its kind's queue and its priority's band (``queue.stream_for``)."""
    task_id = task["id"]
    stream = queue.stream_for(kinds.queue_of(task["kind"]), task.get("priority", queue.DEFAULT_PRIORITY), colour)
    try:
        await services.within_redis_timeout(queue.enqueue(services.redis, task_id, stream))
    except Exception as exc:  # noqa: BLE001 - committed: the reconciler enqueues it later
        metrics.TASKS_ENQUEUE_FAILED.inc()
        log.warning(f"enqueue failed on {what}; task stays queued for the reconciler",
                    extra={"task_id": task_id, "reason": repr(exc)})


async def transition(services: Services, tenant_id: str, task_id: str, change, wrong_state: str):
    """A task moved by ``change`` (a store method), or why not: 404 for no such task, 409 for a
    task in a state that does not allow it."""
    tid = parse_id(task_id)
    task = await change(tenant_id, tid)
    if task is None:
        current = await services.store.get(tenant_id, tid)
        if current is None:
            raise ApiError(404, "not_found", "no such task")
        raise ApiError(409, "conflict", f"task is {current['status']}; {wrong_state}")
    return task


def create_task_for(max_delay_seconds: float):
    """The create endpoint: its body is one model per loaded task kind (``schemas.create_body``),
    and ``delay_seconds`` is bounded by a process setting, so it is made once both are known."""

    async def create_task(request: Request, body: create_body(max_delay_seconds), tenant_id: RateLimitedTenant,
                          colour: TaskColour, idempotency_key: str | None = Header(None, min_length=1, max_length=200)):
        services = services_of(request)
        gates.check_kind_enabled(services.config.config, body.kind)
        delay = delay_of(body)
        if delay is not None and delay > max_delay_seconds:
            # What no schema can say (it depends on the time now): a 400, as for a foreign cursor.
            raise ApiError(400, "run_at_too_far", f"run_at is {delay:.0f} s from now; at most {max_delay_seconds:g} s "
                                                  f"ahead (TASKS_API_MAX_DELAY_SECONDS)")
        try:
            task, created = await services.store.create(tenant_id, body.kind, body.payload,
                                                        services.config.config.task_max_attempts, idempotency_key,
                                                        delay, body.priority, kinds.queue_of(body.kind))
        except store.IdempotencyKeyReused:
            # Replaying a key returns the first task only for the same request: another body
            # under it is a client bug that would otherwise be silently dropped.
            raise ApiError(409, "idempotency_key_reused",
                           "this Idempotency-Key was used for a different task (kind or payload); "
                           "use a new key for a new task") from None
        request.scope["task_id"] = str(task["id"])  # on the request's access line (request_context)
        if created:
            metrics.TASKS_CREATED.labels(kind=metrics.kind_label(body.kind)).inc()
            if task["status"] == "queued":  # a scheduled task is queued by a worker when it is due
                await enqueue(services, task, "create", colour)
        return JSONResponse(task, status_code=202, headers={} if created else {"Idempotent-Replayed": "true"})

    return create_task


async def get_task(request: Request, task_id: str, tenant_id: RateLimitedTenant):
    services = services_of(request)
    task = await services.store.get(tenant_id, parse_id(task_id))
    if task is None:
        raise ApiError(404, "not_found", "no such task")
    return task


async def list_page(services: Services, tenant_id: str, status: TaskStatus | None, kind: str | None, limit: int,
                    cursor: str | None) -> dict:
    """One page of the tenant's tasks, newest first, and the cursor of the next one if any."""
    if kind is not None and (problem := unstorable_text(kind)):
        raise ApiError(422, "invalid_request", f"kind: {problem}")
    after = decode_cursor(cursor) if cursor else None
    items = await services.store.list(tenant_id, status, kind, limit + 1, after)
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_cursor": encode_cursor(items[-1]) if more else None}


def list_tasks_up_to(page_size: int):
    """The list route's endpoint: its ``limit`` parameter (default, bound, description) comes from
    a process setting, and FastAPI reads parameters from the endpoint's signature — so the
    endpoint is made once the setting is known."""

    async def list_tasks(request: Request, tenant_id: RateLimitedTenant, status: TaskStatus | None = None,
                         kind: str | None = Query(None, max_length=64, json_schema_extra=STORABLE_SCHEMAS["StorableText"]),
                         limit: int = Query(min(50, page_size), ge=1, le=page_size,
                                            description=f"tasks per page, at most {page_size} (TASKS_API_MAX_PAGE_SIZE)"),
                         cursor: str | None = None):
        return await list_page(services_of(request), tenant_id, status, kind, limit, cursor)

    return list_tasks


async def cancel_task(request: Request, task_id: str, tenant_id: RateLimitedTenant):
    services = services_of(request)
    return await transition(services, tenant_id, task_id, services.store.cancel,
                            "only scheduled, queued or retry_wait tasks can be cancelled")


async def retry_task(request: Request, task_id: str, tenant_id: RateLimitedTenant, colour: TaskColour):
    services = services_of(request)
    task = await transition(services, tenant_id, task_id, services.store.redrive, "only dead tasks can be re-driven")
    await enqueue(services, task, "re-drive", colour)
    return JSONResponse(task, status_code=202)


def add_routes(routes: APIRouter, page_size: int, max_delay_seconds: float) -> None:
    """The task routes, in the order the OpenAPI lists them; ``page_size`` is
    TASKS_API_MAX_PAGE_SIZE, the most tasks a list page holds, ``max_delay_seconds``
    TASKS_API_MAX_DELAY_SECONDS, the furthest ahead a task may be delayed."""
    routes.add_api_route("/v1/tasks", create_task_for(max_delay_seconds), methods=["POST"], status_code=202,
                         responses={**answer(Task, 202, "The task, created (or the first one, replayed under its "
                                                        "Idempotency-Key: `Idempotent-Replayed: true`)"),
                                    **documented(*TENANT, 400, 409, 413)}, **needs(TASKS_WRITE))
    routes.add_api_route("/v1/tasks/{task_id}", get_task, methods=["GET"],
                         responses={**answer(Task, 200, "The task"), **documented(*TENANT, 404)}, **needs(TASKS_READ))
    routes.add_api_route("/v1/tasks", list_tasks_up_to(page_size), methods=["GET"],
                         responses={**answer(TaskPage, 200, "A page of the tenant's tasks"),
                                    **documented(*TENANT, 400)},
                         **needs(TASKS_READ))
    routes.add_api_route("/v1/tasks/{task_id}/cancel", cancel_task, methods=["POST"],
                         responses={**answer(Task, 200, "The task, cancelled"), **documented(*TENANT, 404, 409)},
                         **needs(TASKS_WRITE))
    routes.add_api_route("/v1/tasks/{task_id}/retry", retry_task, methods=["POST"], status_code=202,
                         responses={**answer(Task, 202, "The task, queued again"), **documented(*TENANT, 404, 409)},
                         **needs(TASKS_WRITE))
