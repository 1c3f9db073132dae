"""The task API (FastAPI), wired by ``create_app`` from its three sources: process settings, a
secret source and a config source — the handlers never know whether those are files, Vault or
Consul. Only wiring lives here: the routes are in ``routes`` (one module per resource, each
with its route table), what they depend on per request in ``deps``, what they use in
``api_services``, refusals in ``errors``, what a process takes on at once in ``limits``,
tokens in ``auth``."""

from __future__ import annotations

import functools
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi

from taskplatform import colours, fast_create, gates, kinds, limits, metrics
from taskplatform.api_services import Services
from taskplatform.config_source import build_config_source
from taskplatform.errors import install_handlers
from taskplatform.request_context import RequestContext
from taskplatform.routes import docs, keys, ops, schedules, tasks, webhooks
from taskplatform.runtime_config import ConfigSource
from taskplatform.schemas import STORABLE_SCHEMAS, payload_components
from taskplatform.secrets import SecretSource, for_process
from taskplatform.settings import ProcessSettings


DESCRIPTION = ("Send `Authorization: Bearer <credential>`: an API key (`sy_...`, made by a tenant's admin with "
               "`POST /v1/api-keys`) or a JWT. Each operation names the scope it needs in `x-required-scope`; "
               "a credential without it gets 403 `forbidden`. Errors are `{code, message, request_id}`.")


def create_app(settings: ProcessSettings | None = None, secrets: SecretSource | None = None,
               config: ConfigSource | None = None) -> colours.ReleaseHeader:
    settings = settings or ProcessSettings()
    kinds.registry(settings.kinds_packages)  # the task kinds first: the runtime config, the routes and the metrics name them
    secrets = secrets or for_process(settings)
    config = config or build_config_source(settings)
    if not config.loaded:
        config.load_initial()
    # FastAPI's own /openapi.json and /docs are off: ``routes.docs`` serves both (the document
    # per listener, the page with assets from the image).
    # FastAPI's OpenTelemetry off: the platform's metrics are Prometheus's and its logs JSON lines;
    # left on, FastAPI asks OpenTelemetry on every request whether a provider was configured.
    app = FastAPI(title="taskplatform", version=settings.build_version, lifespan=_services_open, description=DESCRIPTION,
                  openapi_url=None, docs_url=None, redoc_url=None,
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.services = Services(settings, secrets, config)
    metrics.count_kinds(metrics.TASKS_CREATED)
    metrics.set_release(settings.release_colour, settings.build_version)
    _add_middleware(app, settings, config)
    install_handlers(app)
    app.add_exception_handler(limits.Overloaded, _overloaded)
    app.openapi = functools.partial(_openapi_with_storable_schemas, app)
    # On the app's own router, not included ones: FastAPI 0.165 matches a request to an included
    # router twice, ~15-20 µs of CPU on every request.
    tasks.add_routes(app.router, settings.api_max_page_size, settings.api_max_delay_seconds)
    schedules.add_routes(app.router, settings.api_max_page_size)
    webhooks.add_routes(app.router, settings.api_max_page_size)
    keys.add_routes(app.router)
    ops.add_routes(app.router)
    docs.add_routes(app.router)
    # The concurrency limit wraps the whole app, Starlette's own middleware stack included: under
    # overload most requests are refused, and a refusal must cost next to nothing (it counts and
    # logs its refusals itself). ``.app`` is the FastAPI app. Around it all, X-Release: a refusal
    # says which release refused too.
    return colours.ReleaseHeader(
        limits.ConcurrencyLimit(app, settings.api_max_concurrent_requests, settings.pg_pool_size,
                                on_refused=metrics.REQUESTS.labels(route="(overloaded)", status="503").inc),
        settings.release_colour, settings.build_version)


@asynccontextmanager
async def _services_open(app: FastAPI):
    """The pools, the Redis client and the config watch live as long as the app serves."""
    services: Services = app.state.services
    await services.start()
    try:
        yield
    finally:
        await services.stop()


def _add_middleware(app: FastAPI, settings: ProcessSettings, config: ConfigSource) -> None:
    # Innermost: the create fast path stands in for the route, inside everything around it.
    app.add_middleware(fast_create.CreateFastPath, router=app.router, services=app.state.services,
                       max_delay_seconds=settings.api_max_delay_seconds)
    if settings.fault_error_share > 0:  # release tests only: in the product not even a middleware
        app.add_middleware(colours.InjectedFaults, share=settings.fault_error_share)
    # Outermost last: the request context (request id, access log, last-resort 500) sees every
    # request the concurrency limit lets in, the body limit's 413 and maintenance's 503 included.
    app.add_middleware(gates.WritesGate, config=config)
    app.add_middleware(limits.BodySizeLimit, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(RequestContext)


async def _overloaded(request: Request, exc: limits.Overloaded):
    return limits.overloaded_response(request.scope.get("request_id", ""), str(exc))


def _openapi_with_storable_schemas(app: FastAPI) -> dict:
    """FastAPI's OpenAPI document plus the recursive schemas of what is storable, which the
    payloads and the list's ``kind`` refer to (``schemas``); built on the first ask."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
        doc["components"]["schemas"].update(STORABLE_SCHEMAS)
        doc["components"]["schemas"].update(payload_components())
        app.openapi_schema = doc
    return app.openapi_schema
