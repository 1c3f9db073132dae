"""The task API (FastAPI). Built by ``create_app`` from its three sources: process settings,
a secret source and a config source — the handlers never know whether those are files,
Vault or Consul."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import math
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import jwt
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from taskplatform import kinds, logs, metrics, queue, store
from taskplatform.config_report import ConfigReport
from taskplatform.runtime_config import ConfigSource, FileConfigSource
from taskplatform.secrets import FileSecretSource, SecretSource, optional
from taskplatform.settings import ProcessSettings

log = logging.getLogger("taskplatform.api")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(request_id: str, status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    # A message may quote the client's input (a field name): a lone surrogate in it cannot be
    # encoded as UTF-8, and the error answer itself must not fail.
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"code": code, "message": message, "request_id": request_id}, status_code=status,
                        headers=headers)


def unstorable_json(value: Any, where: str = "payload") -> str | None:
    """Why ``value`` (parsed JSON) cannot be stored as PostgreSQL jsonb, or None. Python's JSON
    parser accepts NaN and Infinity and lone surrogate escapes; jsonb refuses them and the NUL
    character, so they are refused here as the client's mistake, not met as a database error.
    Iterative: the nesting depth is the client's choice."""
    stack = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return f"{path}: NaN and Infinity are not JSON numbers"
        elif isinstance(item, str):
            if problem := _unstorable_text(item):
                return f"{path}: {problem}"
        elif isinstance(item, dict):
            for key, child in item.items():
                if problem := _unstorable_text(key):
                    return f"{path}: a key {problem}"
                stack.append((child, f"{path}.{ascii(key)[1:-1][:40]}"))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return None


def _unstorable_text(text: str) -> str | None:
    if "\x00" in text:
        return "contains the NUL character (\\u0000)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate (\\ud800-\\udfff without its pair)"
    return None


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["checksum", "sleep", "fail"]
    payload: dict[str, Any] = Field(default_factory=dict)

    @field_validator("payload")
    @classmethod
    def _storable(cls, payload: dict[str, Any]) -> dict[str, Any]:
        if problem := unstorable_json(payload):
            raise ValueError(problem)
        return payload


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
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")[:128]
        request_id = given or uuid.uuid4().hex
        scope["request_id"] = request_id
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
        self.jwt_key = secrets.get("jwt_signing_key")
        self.store: store.TaskStore | None = None
        self.redis = None
        self._pools = []
        self._watch: asyncio.Task | None = None
        self._report: ConfigReport | None = None
        self._reporting: asyncio.Task | None = None

    async def start(self) -> None:
        s = self.settings
        password = self.secrets.get("postgres_password")
        pool = await store.create_pool(s.pg_nodes(), s.pg_database, s.pg_user, password, s.pg_pool_size,
                                       connect_timeout=s.pg_connect_timeout_seconds)
        self._pools.append(pool)
        read_pool = None
        if len(s.pg_nodes()) > 1:
            read_pool = await store.create_pool(s.pg_nodes(), s.pg_database, s.pg_user, password, s.pg_pool_size,
                                                target="prefer-standby", connect_timeout=s.pg_connect_timeout_seconds)
            self._pools.append(read_pool)
        self.store = store.TaskStore(pool, read_pool)
        self.redis = queue.connect(s.redis_host, s.redis_port, self.secrets.get("redis_password"), s.sentinels(),
                                   s.redis_master_name, optional(self.secrets, "sentinel_password"))
        self._watch = asyncio.create_task(self.config.supervise())
        self._report = ConfigReport(self.config, s.config_state_dir, "api")
        self._reporting = self._report.start()

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


def build_config_source(settings: ProcessSettings) -> ConfigSource:
    if settings.consul_addrs:
        from taskplatform.consul_config import ConsulConfigSource, parse_endpoints

        source: ConfigSource = ConsulConfigSource(
            parse_endpoints(settings.consul_addrs), settings.consul_runtime_path, Path(settings.secrets_dir) / "consul_token",
            settings.config_cache_file, wait_seconds=settings.consul_wait_seconds)
    else:
        source = FileConfigSource(settings.config_file, settings.config_poll_seconds)
    source.on_reload = metrics.CONFIG_RELOADS.inc
    source.on_reject = metrics.CONFIG_REJECTIONS.inc
    source.on_watch_error = metrics.CONFIG_WATCH_ERRORS.inc
    source.subscribe(lambda loaded: metrics.set_config_version(loaded.config.version, loaded.hash))
    source.subscribe(lambda loaded: logging.getLogger().setLevel(loaded.config.log_level))
    return source


def create_app(settings: ProcessSettings | None = None, secrets: SecretSource | None = None,
               config: ConfigSource | None = None) -> FastAPI:
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
                  docs_url=None, redoc_url=None)
    app.add_middleware(RequestContext)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(request.scope.get("request_id", ""), exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(request.scope.get("request_id", ""), 422, "invalid_request", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(request.scope.get("request_id", ""), exc.status_code, code, str(exc.detail))

    async def tenant(request: Request, authorization: str | None = Header(None)) -> str:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise ApiError(401, "unauthorized", "send Authorization: Bearer <JWT signed with the platform key>")
        try:
            claims = jwt.decode(authorization[7:].strip(), services.jwt_key, algorithms=["HS256"],
                                options={"require": ["sub", "exp"]})
        except jwt.PyJWTError as exc:
            raise ApiError(401, "unauthorized", f"invalid token: {exc}") from None
        request.scope["tenant"] = claims["sub"]
        return claims["sub"]

    async def rate_limited_tenant(tenant_id: str = Depends(tenant)) -> str:
        limit = services.config.config.rate_limit_per_minute
        now = time.time()
        key = f"ratelimit:{tenant_id}:{int(now // 60)}"
        try:
            pipe = services.redis.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, 120)
            count, _ = await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - Redis down: accept (PostgreSQL holds the task)
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

    @app.post("/v1/tasks", status_code=202)
    async def create_task(body: TaskCreate, tenant_id: str = Depends(rate_limited_tenant),
                          idempotency_key: str | None = Header(None, max_length=200)):
        schema = kinds.PAYLOADS[body.kind]
        if schema is not None:
            try:
                schema.model_validate(body.payload)
            except ValidationError as exc:
                problems = "; ".join(f"payload.{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}"
                                     for e in exc.errors())
                raise ApiError(422, "invalid_request", problems) from None
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
            try:
                await queue.enqueue(services.redis, task["id"])
            except Exception as exc:  # noqa: BLE001 - committed: the reconciler enqueues it later
                metrics.TASKS_ENQUEUE_FAILED.inc()
                log.warning("enqueue failed; task stays queued for the reconciler",
                            extra={"task_id": task["id"], "reason": repr(exc)})
        return JSONResponse(task, status_code=202, headers={} if created else {"Idempotent-Replayed": "true"})

    @app.get("/v1/tasks/{task_id}")
    async def get_task(task_id: str, tenant_id: str = Depends(rate_limited_tenant)):
        task = await services.store.get(tenant_id, parse_id(task_id))
        if task is None:
            raise ApiError(404, "not_found", "no such task")
        return task

    @app.get("/v1/tasks")
    async def list_tasks(tenant_id: str = Depends(rate_limited_tenant),
                         status: Literal["queued", "running", "retry_wait", "succeeded", "dead", "cancelled"] | None = None,
                         kind: str | None = Query(None, max_length=64), limit: int = Query(50, ge=1, le=500),
                         cursor: str | None = None):
        if kind is not None and (problem := _unstorable_text(kind)):
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

    @app.post("/v1/tasks/{task_id}/cancel")
    async def cancel_task(task_id: str, tenant_id: str = Depends(rate_limited_tenant)):
        return await _transition(tenant_id, task_id, services.store.cancel,
                                 "only queued or retry_wait tasks can be cancelled")

    @app.post("/v1/tasks/{task_id}/retry", status_code=202)
    async def retry_task(task_id: str, tenant_id: str = Depends(rate_limited_tenant)):
        task = await _transition(tenant_id, task_id, services.store.redrive, "only dead tasks can be re-driven")
        try:
            await queue.enqueue(services.redis, task["id"])
        except Exception as exc:  # noqa: BLE001
            log.warning("enqueue failed on re-drive; the reconciler will", extra={"reason": repr(exc)})
        return JSONResponse(task, status_code=202)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/health/ready")
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

    @app.get("/metrics")
    async def metrics_endpoint():
        live: dict[str, dict] = {}
        try:
            length, pending = await queue.queue_depth(services.redis)
            live["queue_stream_length"] = {(): length}
            live["queue_pending"] = {(): pending}
        except Exception:  # noqa: BLE001 - metrics must answer while Redis is down
            pass
        return Response(metrics.exposition(live), media_type="text/plain; version=0.0.4")

    @app.get("/v1/config")
    async def config_info():
        loaded = services.config.current()
        return {"version": loaded.config.version, "hash": loaded.hash, **services.config.reload_state()}

    @app.get("/version")
    async def version():
        return {"version": settings.build_version, "colour": settings.release_colour}

    return app
