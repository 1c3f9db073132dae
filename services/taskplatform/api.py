"""The task API (FastAPI). Built by ``create_app`` from its three sources: process settings,
a secret source and a config source — the handlers never know whether those are files,
Vault or Consul. Refusals are in ``errors``, tokens in ``auth``, what a process takes on at
once in ``limits``."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, Union

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, create_model

from taskplatform import colours, gates, kinds, limits, logs, metrics, queue, store
from taskplatform.auth import Authenticator, LiveKeySet
from taskplatform.config_report import ConfigReport
from taskplatform.config_source import build_config_source
from taskplatform.errors import ApiError, assign_request_id, documented, error_response, install_handlers
from taskplatform.runtime_config import ConfigSource
from taskplatform.secrets import FileSecretSource, SecretSource, optional
from taskplatform.settings import ProcessSettings
from taskplatform.storable import unstorable_json, unstorable_text

log = logging.getLogger("taskplatform.api")


def _valid_payload(kind: str):
    """A kind's payload: kept as the client sent it (stored as is), checked against the kind's
    model and against what PostgreSQL can store; its OpenAPI schema is the kind's model, so a
    request valid by the OpenAPI is accepted."""
    model = kinds.PAYLOADS[kind]

    def check(payload: dict[str, Any]) -> dict[str, Any]:
        if problem := unstorable_json(payload):
            raise ValueError(problem)
        if model is not None:
            try:
                model.model_validate(payload)
            except ValidationError as exc:
                raise ValueError("; ".join(f"payload.{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}"
                                           for e in exc.errors())) from None
        return payload

    schema = model.model_json_schema() if model is not None else {
        "type": "object", "propertyNames": {"$ref": f"{COMPONENTS}StorableText"},
        "additionalProperties": {"$ref": f"{COMPONENTS}StorableJson"}}
    return Annotated[dict[str, Any], AfterValidator(check), WithJsonSchema(schema)]


def _create_body(kind: str) -> type[BaseModel]:
    payload = _valid_payload(kind)
    return create_model(f"Create{kind.capitalize()}Task", __config__=ConfigDict(extra="forbid"),
                        kind=(Literal[kind], ...), payload=(payload, Field(default_factory=dict)))


# What jsonb stores, as JSON Schema: no NaN (JSON has none), no NUL and no lone surrogate in
# strings and keys (``storable``) — so that the OpenAPI promises no more than the API accepts. Recursive, so
# it lives in the OpenAPI's components (added in ``create_app``).
COMPONENTS = "#/components/schemas/"
STORABLE_SCHEMAS = {
    # Lone surrogates cannot be in the pattern (JSON Schema validators use Unicode scalar values):
    # UTF-8 clients cannot send them anyway, only a JSON \\udXXX escape can.
    "StorableText": {"type": "string", "pattern": "^[^\\x00]*$",
                     "description": "text without the NUL character and without lone surrogate escapes"},
    "StorableJson": {"anyOf": [
        {"type": ["null", "boolean", "number"]}, {"$ref": f"{COMPONENTS}StorableText"},
        {"type": "array", "items": {"$ref": f"{COMPONENTS}StorableJson"}},
        {"type": "object", "propertyNames": {"$ref": f"{COMPONENTS}StorableText"},
         "additionalProperties": {"$ref": f"{COMPONENTS}StorableJson"}}]},
}

TaskCreate = Annotated[Union[tuple(_create_body(kind) for kind in kinds.PAYLOADS)], Field(discriminator="kind")]


READY_REDIS_TIMEOUT_SECONDS = 1.0


def encode_cursor(task: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps([task["created_at"], task["id"]]).encode()).decode()


CURSOR_MAX_LENGTH = 512  # the API's own are ~100 characters


def decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    """Anything but a cursor this API returned is the client's mistake: a 400, never a 500."""
    try:
        if len(cursor) > CURSOR_MAX_LENGTH:
            raise ValueError("too long")
        created, task_id = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        if not isinstance(created, str) or not isinstance(task_id, str):
            raise ValueError("not [timestamp, id]")
        after = dt.datetime.fromisoformat(created)
        if after.tzinfo is None:
            raise ValueError("timestamp without a time zone")
        return after.astimezone(dt.timezone.utc), uuid.UUID(task_id)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise ApiError(400, "invalid_cursor", "cursor is not one this API returned; start again without it") from None


class RequestContext:
    """Raw ASGI middleware (cheaper than BaseHTTPMiddleware): request id, JSON access log,
    metrics, and a last-resort 500 in the one error shape — no traceback reaches a client."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        request_id = assign_request_id(scope)
        logs.request_id.set(request_id)  # each request runs in its own asyncio task: its own context
        status_holder = {"status": 500, "started": False}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except store.UNAVAILABLE as exc:
            log.warning("database unavailable", extra={"request_id": request_id, "reason": repr(exc)})
            if not status_holder["started"]:
                await error_response(request_id, 503, "database_unavailable",
                                     "the database is unavailable for a moment; retry the request",
                                     {"Retry-After": "1"})(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id})
            if not status_holder["started"]:
                await error_response(request_id, 500, "internal_error",
                                     "internal error; quote the request_id when reporting it")(scope, receive, send_wrapper)
        route = scope.get("route")
        route_path = getattr(route, "path", "unmatched")
        latency = time.perf_counter() - started
        status = status_holder["status"]
        metrics.REQUEST_LATENCY.labels(route=route_path).observe(latency)
        metrics.REQUESTS.labels(route=route_path, status=str(status)).inc()
        if route_path not in ("/health", "/health/ready", "/metrics"):
            log.info("request", extra={"request_id": request_id, "tenant": scope.get("tenant"), "route": route_path,
                                       "method": scope["method"], "status": status,
                                       "latency_ms": round(latency * 1000, 2)})


class Services:
    """What the handlers use; built in the lifespan."""

    def __init__(self, settings: ProcessSettings, secrets: SecretSource, config: ConfigSource):
        self.settings, self.secrets, self.config = settings, secrets, config
        self.auth = Authenticator(LiveKeySet(secrets, settings.jwt_keys_refresh_seconds),
                                  settings.jwt_issuer, settings.jwt_audience)
        self.store: store.TaskStore | None = None
        self.redis = None
        self._pools = []
        self._watch: asyncio.Task | None = None
        self._report: ConfigReport | None = None
        self._reporting: asyncio.Task | None = None

    async def _pool(self, target: str) -> limits.BoundedPool:
        s = self.settings
        pool = await store.create_pool(s.pg_nodes(), s.pg_database, s.pg_user, self.secrets.get("postgres_password"),
                                       s.pg_pool_size, target=target, connect_timeout=s.pg_connect_timeout_seconds)
        bounded = limits.BoundedPool(pool, s.pg_acquire_timeout_seconds)
        self._pools.append(bounded)
        return bounded

    async def start(self) -> None:
        s = self.settings
        pool = await self._pool("read-write")
        read_pool = await self._pool("prefer-standby") if len(s.pg_nodes()) > 1 else None
        self.store = store.TaskStore(pool, read_pool)
        self.redis = queue.connect(s.redis_host, s.redis_port, self.secrets.get("redis_password"), s.sentinels(),
                                   s.redis_master_name, optional(self.secrets, "sentinel_password"))
        self._watch = asyncio.create_task(self.config.supervise())
        self._report = ConfigReport(self.config, s.config_state_dir, "api")
        self._reporting = self._report.start()

    async def within_redis_timeout(self, awaitable):
        """A Redis call of a request, given up after ``api_redis_timeout_seconds`` (then it
        raises TimeoutError): the caller carries on without Redis. asyncio.timeout, not
        wait_for: on Python 3.11 wait_for wraps the call in a task of its own, per request."""
        async with asyncio.timeout(self.settings.api_redis_timeout_seconds):
            return await awaitable

    async def stop(self) -> None:
        if self._watch:
            self._watch.cancel()
        if self._report and self._reporting:
            self._reporting.cancel()
            self._report.remove()
        if self.redis is not None:
            await self.redis.aclose()
        for pool in self._pools:
            await pool.close()


# What a route can be refused with besides its own errors: every route but the unlimited ones
# may be refused for overload (503); a tenant's routes need a token (401), are rate limited
# (429) and need the database (503 database_unavailable too).
LIMITED = (503,)
TENANT = (401, 422, 429, 503)


def create_app(settings: ProcessSettings | None = None, secrets: SecretSource | None = None,
               config: ConfigSource | None = None) -> colours.ReleaseHeader:
    settings = settings or ProcessSettings()
    secrets = secrets or FileSecretSource(settings.secrets_dir)
    config = config or build_config_source(settings)
    if not config.loaded:
        config.load_initial()
    services = Services(settings, secrets, config)

    @asynccontextmanager
    async def lifespan(_app):
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    app = FastAPI(title="taskplatform", version=settings.build_version, lifespan=lifespan,
                  docs_url=None, redoc_url=None, dependencies=[Depends(gates.writes_open(config))])
    if settings.fault_error_share > 0:  # release tests only: in the product not even a middleware
        app.add_middleware(colours.InjectedFaults, share=settings.fault_error_share)
    # Outermost last: the request context (request id, access log, last-resort 500) sees every
    # request the concurrency limit lets in, the body limit's 413 included.
    app.add_middleware(limits.BodySizeLimit, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(RequestContext)
    install_handlers(app)

    @app.exception_handler(limits.Overloaded)
    async def _overloaded(request: Request, exc: limits.Overloaded):
        return limits.overloaded_response(request.scope.get("request_id", ""), str(exc))

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            doc["components"]["schemas"].update(STORABLE_SCHEMAS)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi

    bearer = HTTPBearer(auto_error=False, description="a JWT (HS256) signed with a key of the platform's key set")

    async def tenant(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str:
        tenant_id = services.auth.tenant(credentials.credentials if credentials else None)
        request.scope["tenant"] = tenant_id
        return tenant_id

    async def rate_limited_tenant(tenant_id: str = Depends(tenant)) -> str:
        limit = services.config.config.rate_limit_per_minute
        now = time.time()
        key = f"ratelimit:{tenant_id}:{int(now // 60)}"
        try:
            pipe = services.redis.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, 120)
            count, _ = await services.within_redis_timeout(pipe.execute())
        except Exception as exc:  # noqa: BLE001 - Redis down or slow: accept (PostgreSQL holds the task)
            log.warning("rate limiter unavailable; allowing", extra={"reason": repr(exc)})
            return tenant_id
        if count > limit:
            retry_after = max(1, 60 - int(now) % 60)
            raise ApiError(429, "rate_limited", f"more than {limit} requests per minute for this tenant",
                           {"Retry-After": str(retry_after)})
        return tenant_id

    def parse_id(task_id: str) -> uuid.UUID:
        try:
            return uuid.UUID(task_id)
        except ValueError:
            raise ApiError(404, "not_found", "no such task") from None

    task_stream = colours.task_stream_for(settings.release_colour)

    async def enqueue(task_id: str, what: str, stream: str) -> None:
        try:
            await services.within_redis_timeout(queue.enqueue(services.redis, task_id, stream))
        except Exception as exc:  # noqa: BLE001 - committed: the reconciler enqueues it later
            metrics.TASKS_ENQUEUE_FAILED.inc()
            log.warning(f"enqueue failed on {what}; task stays queued for the reconciler",
                        extra={"task_id": task_id, "reason": repr(exc)})

    @app.post("/v1/tasks", status_code=202, responses=documented(*TENANT, 409, 413))
    async def create_task(body: TaskCreate, tenant_id: str = Depends(rate_limited_tenant),
                          stream: str = Depends(task_stream),
                          idempotency_key: str | None = Header(None, min_length=1, max_length=200)):
        gates.check_kind_enabled(services.config.config, body.kind)
        try:
            task, created = await services.store.create(tenant_id, body.kind, body.payload,
                                                        services.config.config.task_max_attempts, idempotency_key)
        except store.IdempotencyKeyReused:
            # Replaying a key returns the first task only for the same request: another body
            # under it is a client bug that would otherwise be silently dropped.
            raise ApiError(409, "idempotency_key_reused",
                           "this Idempotency-Key was used for a different task (kind or payload); "
                           "use a new key for a new task") from None
        if created:
            metrics.TASKS_CREATED.inc()
            await enqueue(task["id"], "create", stream)
        return JSONResponse(task, status_code=202, headers={} if created else {"Idempotent-Replayed": "true"})

    @app.get("/v1/tasks/{task_id}", responses=documented(*TENANT, 404))
    async def get_task(task_id: str, tenant_id: str = Depends(rate_limited_tenant)):
        task = await services.store.get(tenant_id, parse_id(task_id))
        if task is None:
            raise ApiError(404, "not_found", "no such task")
        return task

    page_size = settings.api_max_page_size

    @app.get("/v1/tasks", responses=documented(*TENANT, 400))
    async def list_tasks(tenant_id: str = Depends(rate_limited_tenant),
                         status: Literal["queued", "running", "retry_wait", "succeeded", "dead", "cancelled"] | None = None,
                         kind: str | None = Query(None, max_length=64, json_schema_extra=STORABLE_SCHEMAS["StorableText"]),
                         limit: int = Query(min(50, page_size), ge=1, le=page_size,
                                            description=f"tasks per page, at most {page_size} (TASKS_API_MAX_PAGE_SIZE)"),
                         cursor: str | None = None):
        if kind is not None and (problem := unstorable_text(kind)):
            raise ApiError(422, "invalid_request", f"kind: {problem}")
        after = decode_cursor(cursor) if cursor else None
        items = await services.store.list(tenant_id, status, kind, limit + 1, after)
        more = len(items) > limit
        items = items[:limit]
        return {"items": items, "next_cursor": encode_cursor(items[-1]) if more else None}

    async def _transition(tenant_id: str, task_id: str, change, wrong_state: str):
        tid = parse_id(task_id)
        task = await change(tenant_id, tid)
        if task is None:
            current = await services.store.get(tenant_id, tid)
            if current is None:
                raise ApiError(404, "not_found", "no such task")
            raise ApiError(409, "conflict", f"task is {current['status']}; {wrong_state}")
        return task

    @app.post("/v1/tasks/{task_id}/cancel", responses=documented(*TENANT, 404, 409))
    async def cancel_task(task_id: str, tenant_id: str = Depends(rate_limited_tenant)):
        return await _transition(tenant_id, task_id, services.store.cancel,
                                 "only queued or retry_wait tasks can be cancelled")

    @app.post("/v1/tasks/{task_id}/retry", status_code=202, responses=documented(*TENANT, 404, 409))
    async def retry_task(task_id: str, tenant_id: str = Depends(rate_limited_tenant),
                         stream: str = Depends(task_stream)):
        task = await _transition(tenant_id, task_id, services.store.redrive, "only dead tasks can be re-driven")
        await enqueue(task["id"], "re-drive", stream)
        return JSONResponse(task, status_code=202)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/health/ready", responses=documented(503))
    async def ready(request: Request):
        """Ready = can serve: PostgreSQL (the truth) and the runtime config. Redis is reported
        apart and does not fail readiness: creates are accepted without it (the reconciler
        enqueues them later), so taking the API out of rotation would refuse what still works."""
        problems = []
        try:
            await services.store.pool.fetchval("SELECT 1")
        except Exception as exc:  # noqa: BLE001
            problems.append(f"postgresql: {exc.__class__.__name__}")
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

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text exposition"}})
    async def metrics_endpoint():
        live: dict[str, dict] = {}
        try:
            length, pending = await queue.queue_depth(services.redis)
            live["queue_stream_length"] = {(): length}
            live["queue_pending"] = {(): pending}
        except Exception:  # noqa: BLE001 - metrics must answer while Redis is down
            pass
        return Response(metrics.exposition(live), media_type="text/plain; version=0.0.4")

    @app.get("/v1/config", responses=documented(*LIMITED))
    async def config_info():
        loaded = services.config.current()
        return {"version": loaded.config.version, "hash": loaded.hash, **loaded.config.switches(),
                **services.config.reload_state()}

    @app.get("/version", responses=documented(*LIMITED))
    async def version():
        return {"version": settings.build_version, "colour": settings.release_colour}

    # The concurrency limit wraps the whole app, Starlette's own middleware stack included: under
    # overload most requests are refused, and a refusal must cost next to nothing (it counts and
    # logs its refusals itself). ``.app`` is the FastAPI app. Around it all, X-Release: a refusal
    # says which release refused too.
    return colours.ReleaseHeader(
        limits.ConcurrencyLimit(app, settings.api_max_concurrent_requests, settings.pg_pool_size,
                                on_refused=metrics.REQUESTS.labels(route="(overloaded)", status="503").inc),
        settings.release_colour, settings.build_version)
