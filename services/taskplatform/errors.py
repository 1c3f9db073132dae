"""The API's one error shape, ``{code, message, request_id}``: the exception that carries it,
the response that renders it, the handlers that turn every refusal (ours, FastAPI's, Starlette's)
into it, and its OpenAPI description, so every status the API gives is documented."""

from __future__ import annotations

import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class ErrorBody(BaseModel):
    """Every refusal of the API (4xx and 503)."""

    code: str
    message: str
    request_id: str


def error_response(request_id: str, status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    # A message may quote the client's input (a field name): a lone surrogate in it cannot be
    # encoded as UTF-8, and the error answer itself must not fail.
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"code": code, "message": message, "request_id": request_id}, status_code=status,
                        headers=headers)


# What each status means for this API, as the OpenAPI says it (the codes are in the message).
_MEANINGS = {
    400: "Bad request: a cursor this API did not return (`invalid_cursor`), a `run_at` further ahead than "
         "TASKS_API_MAX_DELAY_SECONDS (`run_at_too_far`), a cron expression cron cannot evaluate or a time "
         "zone that does not exist (`invalid_schedule`), a webhook or callback URL the platform will not send to "
         "(`url_not_allowed`: not http(s), or its host resolves to a loopback, private or link-local address), "
         "more tasks in a batch than the runtime config's `batch_max_tasks` (`batch_too_large`), a schedule whose "
         "occurrences come closer together than the runtime config's `schedule_min_interval_seconds` "
         "(`schedule_too_frequent`); in a batch the message names the task (`tasks.<index>.`)",
    401: "Missing, malformed, expired, revoked or foreign bearer token or API key (`unauthorized`)",
    403: "The credential lacks the scope this operation needs (`forbidden`; the message names it)",
    404: "No such task, schedule, API key, webhook or delivery for this tenant, or no such path (`not_found`)",
    405: "Method not allowed on this path (`method_not_allowed`; `Allow` lists the allowed ones)",
    409: "Conflicting state: the task is not in a state that allows this (`conflict`), the "
         "Idempotency-Key was used for another request (`idempotency_key_reused`), the runtime "
         "config disables the task's kind for now (`kind_disabled`), or a `callback_url` was given before the "
         "tenant has a callback secret to sign with (`callback_secret_missing`: `POST /v1/callbacks/secret`), or the "
         "tenant has the runtime config's `schedules_max_per_tenant` schedules already (`schedule_limit_reached`: "
         "delete one)",
    413: "Request body larger than the API accepts (`payload_too_large`)",
    422: "Invalid request: a field, parameter or payload the API cannot accept (`invalid_request`)",
    429: "Rate limit of the tenant exceeded (`rate_limited`; see `Retry-After`)",
    503: "Overloaded (`overloaded`), the database unavailable for a moment "
         "(`database_unavailable`), or a write during maintenance (`maintenance`); retry after "
         "`Retry-After` seconds",
}


def documented(*statuses: int) -> dict[int, dict]:
    """OpenAPI ``responses`` for a route: each status with the error schema and its meaning."""
    return {status: {"model": ErrorBody, "description": _MEANINGS[status]} for status in statuses}


# What a route can be refused with besides its own errors: every route but the unlimited ones
# may be refused for overload (503); a tenant's routes need a credential (401) with the route's
# scope (403), are rate limited (429) and need the database (503 database_unavailable too).
LIMITED = (503,)
TENANT = (401, 403, 422, 429, 503)


def assign_request_id(scope) -> str:
    """The request's id: the caller's X-Request-ID (so a trace crosses the edge), else a new one;
    kept in the ASGI scope for every later reader."""
    if "request_id" not in scope:
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")[:128]
        scope["request_id"] = given or uuid.uuid4().hex
    return scope["request_id"]


def request_id_of(request: Request) -> str:
    return request.scope.get("request_id", "")


def install_handlers(app: FastAPI) -> None:
    """Our refusals, FastAPI's validation errors and Starlette's 404/405 in the one shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(request_id_of(request), exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(request_id_of(request), 422, "invalid_request", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400:  # FastAPI's: a body it could not read as JSON (not UTF-8)
            return error_response(request_id_of(request), 422, "invalid_request", "the body is not JSON in UTF-8")
        headers = exc.headers
        if exc.status_code == 405:
            # Starlette names the methods of the first route of the path only; a client (and the
            # OpenAPI) needs all of them.
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(exc.status_code, "http_error")
        return error_response(request_id_of(request), exc.status_code, code, str(exc.detail), headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers on the request's path. ``iter_route_contexts``
    also walks into included routers (``app.routes`` holds one opaque entry for each)."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)
