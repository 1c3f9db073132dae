"""The common create, ``POST /v1/tasks``, served without FastAPI's routing and dependency solver
(issue 23's submit rate: the solver alone was ~25 % of a create's CPU in the API, redoing per
request what is the same for every create). Raw ASGI middleware, the innermost of the app's,
so the request id, access log, metrics, body limit and maintenance gate around it are the ones
every request passes.

It takes only the plain case: a JSON body (``Content-Type: application/json``) that the route's
own body model accepts, a ``Bearer`` token, no ``Idempotency-Key`` and no ``callback_url``. It
then does what the route's dependencies and endpoint do, in their order and with the same
functions (``deps.authenticate``, ``scopes.require``, ``deps.charge_rate``,
``tasks.create_one``), and renders a refusal as the app's handlers do (``error_response``), so
the answer is the route's, byte for byte. Anything else goes to the FastAPI app untouched: a body
that is not JSON or not valid (the route's 422, whose rate-limit charge comes before it), any
other request. Nothing with an effect happens before that choice, so a request handed on is
served once."""

from __future__ import annotations

import json
from functools import cached_property

from fastapi.routing import APIRoute

from taskplatform import colours, deps, limits, scopes
from taskplatform.api_services import Services
from taskplatform.errors import ApiError, error_response
from taskplatform.routes import tasks

PATH = "/v1/tasks"
_READ_HEADERS = frozenset({b"authorization", b"content-type", b"idempotency-key", colours.PREVIEW_HEADER.encode()})


class CreateFastPath:
    """The middleware (``create_app`` adds it first: the innermost). ``router``: the app's, where
    the create route is; ``services``: the process's."""

    def __init__(self, app, router, services: Services, max_delay_seconds: float):
        self.app, self.router, self.services, self.max_delay_seconds = app, router, services, max_delay_seconds

    @cached_property
    def route(self) -> APIRoute:
        """The route it stands in for: its body model validates, its path names the request in
        the metrics and the access log, its table entry says the scope. Found on the first
        request: the middleware is built before the routes are added."""
        return next(route for route in self.router.routes
                    if isinstance(route, APIRoute) and route.path == PATH and "POST" in route.methods)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH or scope.get("root_path"):
            return await self.app(scope, receive, send)
        headers = _first_headers(scope["headers"])
        token = _bearer_token(headers.get(b"authorization"))
        if token is None or headers.get(b"content-type") != b"application/json" or b"idempotency-key" in headers:
            return await self.app(scope, receive, send)
        messages = await _read_body(receive)
        body = _plain_create(messages)
        if body is not None:
            validated, errors = self.route.body_field.validate(body)
            if not errors:
                response = await self._answer(scope, token, validated, headers)
                return await response(scope, receive, send)
        await self.app(scope, _replay(messages, receive), send)

    async def _answer(self, scope, token: str, body, headers: dict[bytes, bytes]):
        """The route's answer: its dependencies' checks, then its endpoint's create."""
        route = self.route
        scope["route"] = route  # what the router would set: the access log's and metrics' route
        services = self.services
        try:
            principal = await deps.authenticate(services, scope, token)
            scopes.require(principal, scopes.required_scope_of(route))
            await deps.charge_rate(services, principal.tenant, 1)
            preview = {colours.PREVIEW_HEADER: headers.get(colours.PREVIEW_HEADER.encode(), b"").decode("latin-1")}
            return await tasks.create_one(services, scope, principal.tenant, body, None, self.max_delay_seconds,
                                          colours.task_colour(services.settings.release_colour, preview))
        except ApiError as exc:
            return error_response(scope.get("request_id", ""), exc.status, exc.code, exc.message, exc.headers)
        except limits.Overloaded as exc:
            return limits.overloaded_response(scope.get("request_id", ""), str(exc))


def _first_headers(raw) -> dict[bytes, bytes]:
    """The headers it reads, each as its first occurrence (Starlette's ``Headers.get``)."""
    found: dict[bytes, bytes] = {}
    for name, value in raw:
        if name in _READ_HEADERS and name not in found:
            found[name] = value
    return found


def _bearer_token(value: bytes | None) -> str | None:
    """The token of ``Bearer <token>`` in its plain form; None for anything FastAPI's
    ``HTTPBearer`` might read otherwise (another spelling of the scheme, whitespace it would
    strip from the token, no token)."""
    if value is None or not value.startswith(b"Bearer "):
        return None
    token = value[7:].decode("latin-1")  # as Starlette decodes headers
    return token if token and token == token.strip() else None


def _plain_create(messages: list[dict]) -> dict | None:
    """The body as JSON when it is a create the fast path takes: whole (not cut by a
    disconnect), an object without a ``callback_url`` (its URL check stays the route's). None:
    the route's to answer."""
    if messages[-1]["type"] != "http.request":
        return None
    try:
        body = json.loads(b"".join(message.get("body", b"") for message in messages))
    except ValueError:  # not JSON, not UTF-8: the route's 422
        return None
    return body if isinstance(body, dict) and "callback_url" not in body else None


async def _read_body(receive) -> list[dict]:
    """Every message of the request body, as received (the body limit's ``receive`` counts them)."""
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages


def _replay(messages: list[dict], receive):
    """A ``receive`` that gives the app the messages already read, then the client's own."""
    pending = list(messages)

    async def replay():
        return pending.pop(0) if pending else await receive()

    return replay
