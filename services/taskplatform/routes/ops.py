"""What probes, scrapers and operators ask an API process: liveness, readiness, metrics, the
runtime config it applied and the release it is. No token; never rate limited, and the first
three never refused for concurrency either (``limits.UNLIMITED_PATHS``). ``OPERATOR_PATHS``
are answered on the API's own port only: the edge answers them 404 (its nginx.conf), and the
OpenAPI it serves leaves them out (``routes.docs``)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from taskplatform import metrics, queue
from taskplatform.deps import services_of
from taskplatform.errors import LIMITED, documented, error_response
from taskplatform.scopes import public

READY_REDIS_TIMEOUT_SECONDS = 1.0
OPERATOR_PATHS = ("/metrics", "/v1/config")


async def health():
    return {"status": "ok"}


async def ready(request: Request):
    """Ready = can serve: PostgreSQL (the truth; with Vault, a PostgreSQL lease not yet ended)
    and the runtime config. Redis is reported
    apart and does not fail readiness: creates are accepted without it (the reconciler
    enqueues them later), so taking the API out of rotation would refuse what still works."""
    services = services_of(request)
    problems = []
    try:
        await services.store.pool.fetchval("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        problems.append(f"postgresql: {exc.__class__.__name__}")
    if services.credentials and (expired := services.credentials.problem()):
        problems.append(expired)  # the Vault lease ran out: new connections would be refused
    if not services.config.loaded:
        problems.append("runtime config not loaded")
    redis_problem = None
    try:
        # Bounded well within the container probe's 3 s, also when Redis does not answer.
        await asyncio.wait_for(services.redis.ping(), READY_REDIS_TIMEOUT_SECONDS)
    except Exception as exc:  # noqa: BLE001
        redis_problem = f"redis: {exc.__class__.__name__}"
    if problems:
        if redis_problem:
            problems.append(f"({redis_problem}, not required)")
        return error_response(request.scope["request_id"], 503, "not_ready", "; ".join(problems))
    return {"status": "ready", "config_version": services.config.config.version,
            "redis": "unavailable" if redis_problem else "ok"}


async def metrics_endpoint(request: Request):
    services = services_of(request)
    live: dict[str, dict] = {}
    try:
        length, pending = await queue.queue_depth(services.redis)
        live["queue_stream_length"] = {(): length}
        live["queue_pending"] = {(): pending}
    except Exception:  # noqa: BLE001 - metrics must answer while Redis is down
        pass
    return Response(metrics.exposition(live), media_type="text/plain; version=0.0.4")


async def config_info(request: Request):
    services = services_of(request)
    loaded = services.config.current()
    return {"version": loaded.config.version, "hash": loaded.hash, **loaded.config.switches(),
            **services.config.reload_state()}


async def version(request: Request):
    services = services_of(request)
    return {"version": services.settings.build_version, "colour": services.settings.release_colour}


def add_routes(routes: APIRouter) -> None:
    """The operational routes, in the order the OpenAPI lists them."""
    routes.add_api_route("/health", health, methods=["GET"], **public())
    routes.add_api_route("/health/ready", ready, methods=["GET"], responses=documented(503), **public())
    routes.add_api_route("/metrics", metrics_endpoint, methods=["GET"], response_class=Response,
                         responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                                          "description": "Prometheus text exposition"}}, **public())
    routes.add_api_route("/v1/config", config_info, methods=["GET"], responses=documented(*LIMITED), **public())
    routes.add_api_route("/version", version, methods=["GET"], responses=documented(*LIMITED), **public())
