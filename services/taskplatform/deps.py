"""The task API's request dependencies, all in one place: the tenant a bearer token names and
its rate limit, the streams a task goes on — and the process's services (``services_of``). (The
maintenance gate every request passes first is a middleware, ``gates.WritesGate``.) They reach
the process's state through ``request.app.state`` (set by ``create_app``), so routes and
dependencies are plain module functions. Routes declare them by the ``Annotated`` names at the bottom."""

from __future__ import annotations

import functools
import logging
import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from taskplatform import api_keys, colours
from taskplatform.api_services import Services
from taskplatform.auth import unauthorized
from taskplatform.errors import ApiError
from taskplatform.scopes import Principal

log = logging.getLogger("taskplatform.api")

# The OpenAPI's security scheme; a missing or malformed header is the authenticator's to refuse
# (401 in the one error shape), not FastAPI's.
bearer = HTTPBearer(auto_error=False, description="an API key (`sy_<id>_<secret>`, made with POST /v1/api-keys) "
                                                   "or a JWT (HS256) signed with a key of the platform's key set")


def services_of(request: Request) -> Services:
    """The process's services, which ``create_app`` keeps on the app's state. A plain function,
    not a dependency: FastAPI's dependency solver adds ~15 µs to every request for each one,
    here for an attribute read."""
    return request.app.state.services


async def principal_of(request: Request,
                       credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
    """Who sends the request: the tenant and scopes of its API key or JWT (401 without a valid
    one). The tenant and credential (a key's id, never its secret) are kept for the access log."""
    return await authenticate(services_of(request), request.scope, credentials.credentials if credentials else None)


async def authenticate(services: Services, scope, token: str | None) -> Principal:
    """``principal_of``'s check of a bearer token, also for the create fast path
    (``fast_create``), which has the ASGI scope and no FastAPI request."""
    if not token:
        raise unauthorized("send Authorization: Bearer <API key sy_...> or <JWT signed with a platform key>")
    if api_keys.looks_like_key(token):
        principal = await services.api_keys.principal(token)
    else:
        principal = services.auth.principal(token)
    scope["tenant"] = principal.tenant
    scope["credential"] = principal.credential
    return principal


async def rate_limited_tenant(request: Request, principal: Annotated[Principal, Depends(principal_of)]) -> str:
    """The tenant, within its requests per minute (429 with Retry-After beyond them), counted in
    Redis per minute across every API process."""
    await charge_rate(services_of(request), principal.tenant, 1)
    return principal.tenant


async def charge_rate(services: Services, tenant_id: str, requests: int, batch: int | None = None) -> None:
    """Counts ``requests`` more of the tenant in this minute; beyond its limit, 429 with
    Retry-After. A request refused stays counted (a client hammering stays refused); the other
    tasks of a ``batch`` of that many (its request is counted already) are given back when
    refused, so a batch too big for what is left of the minute costs one request."""
    if requests <= 0:
        return
    limit = services.config.config.rate_limit_per_minute
    now = time.time()
    key = f"ratelimit:{tenant_id}:{int(now // 60)}"
    try:
        # With the other requests' Redis commands in flight, in one pipeline (``Services.redis_round``).
        count = (await services.redis_round(functools.partial(_count, key, requests)))[0]
    except Exception as exc:  # noqa: BLE001 - Redis down or slow: accept (PostgreSQL holds the task)
        log.warning("rate limiter unavailable; allowing", extra={"reason": repr(exc)})
        return
    if count <= limit:
        return
    if batch is not None:
        try:
            await services.within_redis_timeout(services.redis.decrby(key, requests))
        except Exception as exc:  # noqa: BLE001 - then they stay counted until the minute ends
            log.warning("rate limiter: a refused batch's tasks not given back", extra={"reason": repr(exc)})
    raise ApiError(429, "rate_limited", f"more than {limit} requests per minute for this tenant"
                                        f"{f' (a batch counts each task: this one {batch})' if batch else ''}",
                   {"Retry-After": str(max(1, 60 - int(now) % 60))})


def _count(key: str, requests: int, pipe) -> int:
    """A rate-limit count on a pipeline: the key's count once ``requests`` are added (the
    first reply), the key kept past its minute."""
    pipe.incrby(key, requests)
    pipe.expire(key, 120)
    return 2


def task_colour(request: Request) -> str:
    """The colour whose streams a task this request creates or re-drives goes on ("": the
    shared ones; ``colours.task_colour``); its queue and priority pick the stream. Called by the
    endpoints, not a dependency: for a header read, FastAPI's solver cost more than the read
    (and a plain-function dependency would run in its thread pool)."""
    return colours.task_colour(services_of(request).settings.release_colour, request.headers)


RateLimitedTenant = Annotated[str, Depends(rate_limited_tenant)]
Caller = Annotated[Principal, Depends(principal_of)]
