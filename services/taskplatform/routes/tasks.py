"""A tenant's tasks: create (one, or a batch), read, list, cancel and re-drive (``/v1/tasks``).
PostgreSQL holds each task; Redis only carries its id to the workers, so a create or re-drive
whose enqueue fails still succeeds (the workers' reconciler enqueues it later).

**Batches** (``POST /v1/tasks:batch``) are all or nothing: every task is checked first (the body
against each kind's model — a 422 names the item, ``tasks.3...`` —, then what no schema says:
the kind enabled, ``run_at`` not too far, the callback URLs allowed), and all are inserted in
one transaction, so one refused task creates none; a task whose idempotency key names a task of
another request refuses the batch (409, naming the item), one of the same request is answered
with the task made earlier (``created``: false) — also when the earlier one is in the same
batch (no schema can say that keys differ across items, so a repeat is not an error). The answer
lists every task in the request's order. The batch is enqueued as a create is, after the commit.
The rate limit counts each task of a batch as a request (a batch would otherwise multiply it);
a batch refused for it counts as one.

No ``from __future__ import annotations`` here: the create endpoint's body type is made at start
from the loaded task kinds (``create_task_for``), and FastAPI reads it from the signature."""

import logging
import uuid
from typing import Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from taskplatform import deps, gates, kinds, metrics, queue, store
from taskplatform.scopes import TASKS_READ, TASKS_WRITE, needs
from taskplatform.api_services import Services
from taskplatform.cursors import decode_cursor, encode_cursor
from taskplatform.deps import RateLimitedTenant, services_of, task_colour
from taskplatform.errors import TENANT, ApiError, documented
from taskplatform.responses import Task, TaskBatch, TaskPage, answer, links_to
from taskplatform.routes.webhooks import check_callbacks
from taskplatform.runtime_config import RuntimeConfig
from taskplatform.schemas import STORABLE_SCHEMAS, create_batch_body, create_body, delay_of
from taskplatform.storable import unstorable_text

log = logging.getLogger("taskplatform.api")

TaskStatus = Literal["scheduled", "queued", "running", "retry_wait", "succeeded", "dead", "cancelled"]


def parse_id(task_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(task_id)
    except ValueError:
        raise ApiError(404, "not_found", "no such task") from None


async def enqueue(services: Services, tasks: list[dict], what: str, colour: str) -> None:
    """Each on the stream of its kind's queue and its priority's band (``queue.stream_for``), in
    one round trip and one Redis timeout however many they are."""
    if not tasks:
        return
    entries = [(task["id"], queue.stream_for(kinds.queue_of(task["kind"]),
                                             task.get("priority", queue.DEFAULT_PRIORITY), colour)) for task in tasks]
    try:
        await services.creates.enqueue(entries)  # with the other requests' (``creates``), within the Redis timeout
    except Exception as exc:  # noqa: BLE001 - committed: the reconciler enqueues them later
        metrics.TASKS_ENQUEUE_FAILED.inc(len(tasks))
        log.warning(f"enqueue failed on {what}; task stays queued for the reconciler",
                    extra={"task_id": tasks[0]["id"], "tasks": len(tasks), "reason": repr(exc)})


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


def new_task(config: RuntimeConfig, body, key: str | None, max_delay_seconds: float, field: str = "") -> store.NewTask:
    """A create's body as the task to insert, once what no schema can say is checked: its kind
    enabled (409) and its ``run_at`` not too far (400); ``field`` names the item of a batch."""
    gates.check_kind_enabled(config, body.kind, field)
    delay = delay_of(body)
    if delay is not None and delay > max_delay_seconds:
        # What no schema can say (it depends on the time now): a 400, as for a foreign cursor.
        raise ApiError(400, "run_at_too_far", f"{field}run_at is {delay:.0f} s from now; at most "
                                              f"{max_delay_seconds:g} s ahead (TASKS_API_MAX_DELAY_SECONDS)")
    return store.NewTask(body.kind, body.payload, key, delay, body.priority, kinds.queue_of(body.kind),
                         body.callback_url)


def key_reused(field: str) -> ApiError:
    # Replaying a key returns the first task only for the same request: another body under it
    # is a client bug that would otherwise be silently dropped.
    return ApiError(409, "idempotency_key_reused", f"{field} was used for a different task (kind, payload or "
                                                   f"callback_url); use a new key for a new task")


async def created(services: Services, tasks: list[dict], what: str, colour: str) -> None:
    """After the commit: the tasks just made counted and the queued ones enqueued (a scheduled
    task is queued by a worker when it is due)."""
    for task in tasks:
        metrics.TASKS_CREATED.labels(kind=metrics.kind_label(task["kind"])).inc()
    await enqueue(services, [task for task in tasks if task["status"] == "queued"], what, colour)


def create_task_for(max_delay_seconds: float):
    """The create endpoint: its body is one model per loaded task kind (``schemas.create_body``),
    and ``delay_seconds`` is bounded by a process setting, so it is made once both are known."""

    async def create_task(request: Request, body: create_body(max_delay_seconds), tenant_id: RateLimitedTenant,
                          idempotency_key: str | None = Header(None, min_length=1, max_length=200)):
        return await create_one(services_of(request), request.scope, tenant_id, body, idempotency_key,
                                max_delay_seconds, task_colour(request))

    return create_task


async def create_one(services: Services, scope, tenant_id: str, body, idempotency_key: str | None,
                     max_delay_seconds: float, colour: str) -> JSONResponse:
    """A create once its caller is authenticated, rate limited and its body valid: the route's
    and the fast path's (``fast_create``) alike, so both answer the same."""
    config = services.config.config
    task = new_task(config, body, idempotency_key, max_delay_seconds)
    if task.callback_url:
        await check_callbacks(services, tenant_id, {"callback_url": task.callback_url})
    try:
        # With the other creates in flight, in one statement (``creates``): answered once it committed.
        made, is_new = await services.creates.create(tenant_id, task, config.task_max_attempts)
    except store.IdempotencyKeyReused:
        raise key_reused("this Idempotency-Key") from None
    scope["task_id"] = str(made["id"])  # on the request's access line (request_context)
    if is_new:
        await created(services, [made], "create", colour)
    return JSONResponse(made, status_code=202, headers={} if is_new else {"Idempotent-Replayed": "true"})


def create_batch_for(max_delay_seconds: float):
    """The batch endpoint (the module says how a batch is created), made as ``create_task_for``."""

    async def create_task_batch(request: Request, body: create_batch_body(max_delay_seconds),
                                tenant_id: RateLimitedTenant):
        services = services_of(request)
        config = services.config.config
        if len(body.tasks) > config.batch_max_tasks:
            raise ApiError(400, "batch_too_large", f"tasks: {len(body.tasks)} in one batch, at most "
                                                   f"{config.batch_max_tasks} (runtime config batch_max_tasks); "
                                                   f"send them in several batches")
        await deps.charge_rate(services, tenant_id, len(body.tasks) - 1, batch=len(body.tasks))  # +the request
        tasks = [new_task(config, item, item.idempotency_key, max_delay_seconds, f"tasks.{i}.")
                 for i, item in enumerate(body.tasks)]
        await check_callbacks(services, tenant_id, {f"tasks.{i}.callback_url": task.callback_url
                                                    for i, task in enumerate(tasks) if task.callback_url})
        try:
            results = await services.store.create_batch(tenant_id, tasks, config.task_max_attempts)
        except store.IdempotencyKeyReused as exc:
            raise key_reused(f"tasks.{exc.index}.idempotency_key") from None
        await created(services, [task for task, is_new in results if is_new], "batch create", task_colour(request))
        return JSONResponse({"items": [{"created": is_new, "task": task} for task, is_new in results]}, status_code=202)

    return create_task_batch


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


async def retry_task(request: Request, task_id: str, tenant_id: RateLimitedTenant):
    services = services_of(request)
    task = await transition(services, tenant_id, task_id, services.store.redrive, "only dead tasks can be re-driven")
    await enqueue(services, [task], "re-drive", task_colour(request))
    return JSONResponse(task, status_code=202)


def _task_links(pointer: str) -> dict:
    """From a task in an answer to what can be done with it."""
    return links_to("task_id", pointer, GetTask="get_task", CancelTask="cancel_task", RetryTask="retry_task")


def add_routes(routes: APIRouter, page_size: int, max_delay_seconds: float) -> None:
    """The task routes, in the order the OpenAPI lists them; ``page_size`` is
    TASKS_API_MAX_PAGE_SIZE, the most tasks a list page holds, ``max_delay_seconds``
    TASKS_API_MAX_DELAY_SECONDS, the furthest ahead a task may be delayed."""
    routes.add_api_route("/v1/tasks", create_task_for(max_delay_seconds), methods=["POST"], status_code=202,
                         operation_id="create_task",
                         responses={**answer(Task, 202, "The task, created (or the first one, replayed under its "
                                                        "Idempotency-Key: `Idempotent-Replayed: true`)",
                                             _task_links("/id")),
                                    **documented(*TENANT, 400, 409, 413)}, **needs(TASKS_WRITE))
    routes.add_api_route("/v1/tasks:batch", create_batch_for(max_delay_seconds), methods=["POST"], status_code=202,
                         operation_id="create_task_batch",
                         description="All or nothing, in one transaction: a task refused refuses the batch (the "
                                     "error names it, `tasks.<index>`) and none is created. A task whose "
                                     "`idempotency_key` names a task made earlier by the same request is answered "
                                     "with it (`created`: false); by another request, the batch is refused (409). "
                                     "Each task counts as a request of the tenant's rate limit. At most the runtime "
                                     "config's `batch_max_tasks` tasks (100 by default).",
                         responses={**answer(TaskBatch, 202, "Every task of the batch, in the request's order: "
                                                             "created, or replayed under its idempotency_key",
                                             _task_links("/items/0/task/id")),
                                    **documented(*TENANT, 400, 409, 413)}, **needs(TASKS_WRITE))
    routes.add_api_route("/v1/tasks/{task_id}", get_task, methods=["GET"], operation_id="get_task",
                         responses={**answer(Task, 200, "The task"), **documented(*TENANT, 404)}, **needs(TASKS_READ))
    routes.add_api_route("/v1/tasks", list_tasks_up_to(page_size), methods=["GET"], operation_id="list_tasks",
                         responses={**answer(TaskPage, 200, "A page of the tenant's tasks"),
                                    **documented(*TENANT, 400)},
                         **needs(TASKS_READ))
    routes.add_api_route("/v1/tasks/{task_id}/cancel", cancel_task, methods=["POST"], operation_id="cancel_task",
                         responses={**answer(Task, 200, "The task, cancelled"), **documented(*TENANT, 404, 409)},
                         **needs(TASKS_WRITE))
    routes.add_api_route("/v1/tasks/{task_id}/retry", retry_task, methods=["POST"], status_code=202,
                         operation_id="retry_task",
                         responses={**answer(Task, 202, "The task, queued again"), **documented(*TENANT, 404, 409)},
                         **needs(TASKS_WRITE))
