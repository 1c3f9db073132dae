"""What the API does around every request, outside FastAPI: a request id, the JSON access log,
the request metrics, and a last-resort answer in the one error shape (``errors``) — 503 when
the database is away, else 500 — so no traceback reaches a client."""

from __future__ import annotations

import logging
import time

from taskplatform import logs, metrics, store
from taskplatform.errors import assign_request_id, error_response

log = logging.getLogger("taskplatform.api")

_REQUEST_METRICS: dict[tuple[str, int], tuple] = {}


def _request_metrics(route_path: str, status: int) -> tuple:
    """The route's latency histogram and the (route, status) counter, each looked up once (a
    ``labels`` call checks and joins its labels on every request). Few: the app's routes, and
    "unmatched", by the statuses they answer."""
    found = _REQUEST_METRICS.get((route_path, status))
    if found is None:
        found = _REQUEST_METRICS[route_path, status] = (metrics.REQUEST_LATENCY.labels(route=route_path),
                                                        metrics.REQUESTS.labels(route=route_path, status=str(status)))
    return found


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
        latency_of_route, requests_of = _request_metrics(route_path, status)
        latency_of_route.observe(latency)
        requests_of.inc()
        if route_path not in ("/health", "/health/ready", "/metrics"):
            # task_id: the task a request created (or replayed), so a trace of the request finds
            # the task's lines in the workers (`make trace`).
            log.info("request", extra={"request_id": request_id, "tenant": scope.get("tenant"),
                                       "credential": scope.get("credential"), "route": route_path,
                                       "method": scope["method"], "status": status,
                                       "latency_ms": round(latency * 1000, 2),
                                       **({"task_id": scope["task_id"]} if "task_id" in scope else {})})
