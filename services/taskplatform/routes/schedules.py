"""A tenant's schedules (``/v1/schedules``): create, read, list, pause, resume, delete. The
workers fire them (``schedules.ScheduleStore.fire_due``): one task per occurrence.

No ``from __future__ import annotations`` here: the create endpoint's body type is made at start
from the loaded task kinds (``schemas.create_schedule_body``), and FastAPI reads it from the
signature."""

import datetime as dt
import uuid

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from taskplatform import gates, recurrence
from taskplatform.cursors import decode_cursor, encode_cursor
from taskplatform.deps import RateLimitedTenant, services_of
from taskplatform.errors import TENANT, ApiError, documented
from taskplatform.responses import answer, links_to
from taskplatform.schedules import ScheduleLimitReached
from taskplatform.schemas import create_schedule_body
from taskplatform.scopes import SCHEDULES_WRITE, TASKS_READ, needs


def parse_id(schedule_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(schedule_id)
    except ValueError:
        raise ApiError(404, "not_found", "no such schedule") from None


def checked_recurrence(cron: str | None, timezone: str | None) -> None:
    """What no schema can say: that cron can evaluate the expression and the time zone exists
    (a 400, as for a foreign cursor), each refusal naming the field and what to write."""
    if cron is None:
        return
    for field, check, value in (("cron", recurrence.parse_cron, cron), ("timezone", recurrence.parse_zone, timezone)):
        try:
            check(value)
        except recurrence.RecurrenceError as exc:
            raise ApiError(400, "invalid_schedule", f"{field}: {exc}") from None


def checked_spacing(cron: str | None, timezone: str | None, interval_seconds: int | None, least: int) -> None:
    """Occurrences at least ``least`` seconds apart (runtime config ``schedule_min_interval_seconds``):
    else 400 ``schedule_too_frequent``, naming the field, the minimum and what to write."""
    if interval_seconds is not None:
        if interval_seconds < least:
            raise ApiError(400, "schedule_too_frequent",
                           f"interval_seconds: {interval_seconds} s is shorter than the minimum, {least} s "
                           f"(runtime config schedule_min_interval_seconds); give {least} or more")
        return
    if least <= 60:  # five fields: a minute apart at the most often
        return
    recurring = recurrence.Cron(cron, recurrence.parse_zone(timezone))
    gap = recurrence.shortest_gap(recurring, dt.datetime.now(dt.timezone.utc))
    if gap < least:
        raise ApiError(400, "schedule_too_frequent",
                       f"cron: {cron!r} fires {gap:g} s apart, more often than the minimum, {least} s "
                       f"(runtime config schedule_min_interval_seconds); write one whose occurrences are at "
                       f"least that far apart, e.g. '{recurrence.example_cron(least)}'")


async def create_schedule(request: Request, body: create_schedule_body(), tenant_id: RateLimitedTenant):
    services = services_of(request)
    cfg = services.config.config
    gates.check_kind_enabled(cfg, body.kind)
    checked_recurrence(body.cron, body.timezone)
    checked_spacing(body.cron, body.timezone, body.interval_seconds, cfg.schedule_min_interval_seconds)
    try:
        schedule = await services.schedules.create(tenant_id, body.kind, body.payload, body.cron, body.timezone,
                                                   body.interval_seconds, body.catchup, body.priority,
                                                   max_per_tenant=cfg.schedules_max_per_tenant)
    except ScheduleLimitReached as exc:
        raise ApiError(409, "schedule_limit_reached",
                       f"this tenant has {exc.count} schedules, the most it may have "
                       f"(runtime config schedules_max_per_tenant: {exc.limit}); delete one it no longer needs "
                       f"(DELETE /v1/schedules/{{schedule_id}}) or ask the operator to raise the limit") from None
    return JSONResponse(schedule, status_code=201)


async def get_schedule(request: Request, schedule_id: str, tenant_id: RateLimitedTenant):
    schedule = await services_of(request).schedules.get(tenant_id, parse_id(schedule_id))
    if schedule is None:
        raise ApiError(404, "not_found", "no such schedule")
    return schedule


def list_schedules_up_to(page_size: int):
    """The list route's endpoint, its ``limit`` bounded by TASKS_API_MAX_PAGE_SIZE (a process
    setting FastAPI reads from the signature: made once it is known)."""

    async def list_schedules(request: Request, tenant_id: RateLimitedTenant,
                             limit: int = Query(min(50, page_size), ge=1, le=page_size, description=(
                                 f"schedules per page, at most {page_size} (TASKS_API_MAX_PAGE_SIZE)")),
                             cursor: str | None = None):
        after = decode_cursor(cursor) if cursor else None
        items = await services_of(request).schedules.list(tenant_id, limit + 1, after)
        more = len(items) > limit
        items = items[:limit]
        return {"items": items, "next_cursor": encode_cursor(items[-1]) if more else None}

    return list_schedules


async def pause_schedule(request: Request, schedule_id: str, tenant_id: RateLimitedTenant):
    return await _set_paused(request, schedule_id, tenant_id, True)


async def resume_schedule(request: Request, schedule_id: str, tenant_id: RateLimitedTenant):
    return await _set_paused(request, schedule_id, tenant_id, False)


async def _set_paused(request: Request, schedule_id: str, tenant_id: str, paused: bool) -> dict:
    schedule = await services_of(request).schedules.set_paused(tenant_id, parse_id(schedule_id), paused)
    if schedule is None:
        raise ApiError(404, "not_found", "no such schedule")
    return schedule


async def delete_schedule(request: Request, schedule_id: str, tenant_id: RateLimitedTenant):
    if not await services_of(request).schedules.delete(tenant_id, parse_id(schedule_id)):
        raise ApiError(404, "not_found", "no such schedule")
    return Response(status_code=204)


def add_routes(routes: APIRouter, page_size: int) -> None:
    """The schedule routes, in the order the OpenAPI lists them; ``page_size`` is
    TASKS_API_MAX_PAGE_SIZE, the most schedules a list page holds. Changing schedules needs
    ``schedules:write`` (a schedule makes tasks for ever: more than ``tasks:write``); reading them
    ``tasks:read``, as reading the tasks they make."""
    links = links_to("schedule_id", "/id", GetSchedule="get_schedule", PauseSchedule="pause_schedule",
                     ResumeSchedule="resume_schedule", DeleteSchedule="delete_schedule")
    routes.add_api_route("/v1/schedules", create_schedule, methods=["POST"], status_code=201,
                         operation_id="create_schedule",
                         responses={**answer(None, 201, "The schedule", links), **documented(*TENANT, 400, 409, 413)},
                         **needs(SCHEDULES_WRITE))
    routes.add_api_route("/v1/schedules/{schedule_id}", get_schedule, methods=["GET"], operation_id="get_schedule",
                         responses=documented(*TENANT, 404), **needs(TASKS_READ))
    routes.add_api_route("/v1/schedules", list_schedules_up_to(page_size), methods=["GET"],
                         operation_id="list_schedules", responses=documented(*TENANT, 400), **needs(TASKS_READ))
    routes.add_api_route("/v1/schedules/{schedule_id}/pause", pause_schedule, methods=["POST"],
                         operation_id="pause_schedule", responses=documented(*TENANT, 404), **needs(SCHEDULES_WRITE))
    routes.add_api_route("/v1/schedules/{schedule_id}/resume", resume_schedule, methods=["POST"],
                         operation_id="resume_schedule", responses=documented(*TENANT, 404), **needs(SCHEDULES_WRITE))
    routes.add_api_route("/v1/schedules/{schedule_id}", delete_schedule, methods=["DELETE"], status_code=204,
                         operation_id="delete_schedule", responses=documented(*TENANT, 404), **needs(SCHEDULES_WRITE))
