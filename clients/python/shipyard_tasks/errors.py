"""The client's exceptions, one hierarchy: ``ShipyardError`` at the root; ``ApiError`` for an
answer of the API in its error shape (``code``, ``message``, ``request_id``), one subclass per
status a caller handles differently; ``TransportError`` when no answer came; ``WaitTimeout``
when a task did not finish in time."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from shipyard_tasks.models import Task


class ShipyardError(Exception):
    """Anything this client raises."""


class ApiError(ShipyardError):
    """The API refused a request. ``code``, ``message`` and ``request_id`` are the API's (quote the
    request id when asking an operator: every log line of the request carries it)."""

    def __init__(self, status: int, code: str, message: str, request_id: str, method: str, url: str,
                 retry_after: float | None = None):
        self.status, self.code, self.message, self.request_id = status, code, message, request_id
        self.method, self.url, self.retry_after = method, url, retry_after
        super().__init__(f"{method} {url}: {status} {code}: {message} (request_id {request_id or 'none'})")


class InvalidRequest(ApiError):
    """400 or 422: the request is wrong (a field, a foreign cursor, a run_at too far ahead)."""


class Unauthorized(ApiError):
    """401: the credential is missing, malformed, expired, revoked or unknown."""


class Forbidden(ApiError):
    """403: the credential lacks the operation's scope (the message names it)."""


class NotFound(ApiError):
    """404: no such task or key for this tenant."""


class Conflict(ApiError):
    """409: the task's state forbids it (``conflict``), the idempotency key was used for another
    request (``idempotency_key_reused``), or the task's kind is disabled (``kind_disabled``)."""


class PayloadTooLarge(ApiError):
    """413: the body is larger than the API accepts."""


class RateLimited(ApiError):
    """429: the tenant's rate limit; ``retry_after`` says when to send again."""


class Unavailable(ApiError):
    """502, 503 or 504: overloaded, maintenance, the database away, or a proxy without an API."""


class ServerError(ApiError):
    """Any other 5xx: a fault of the API (the request id finds it in the logs)."""


_BY_STATUS: dict[int, type[ApiError]] = {400: InvalidRequest, 422: InvalidRequest, 401: Unauthorized, 403: Forbidden,
                                         404: NotFound, 409: Conflict, 413: PayloadTooLarge, 429: RateLimited,
                                         502: Unavailable, 503: Unavailable, 504: Unavailable}


def retry_after_of(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (the API sends seconds; an HTTP date is not understood: None)."""
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def error_from(response: httpx.Response) -> ApiError:
    """The exception for a refusal. A body not in the API's shape (a proxy's HTML page) keeps
    its first characters as the message, so the cause is still visible."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not (isinstance(body, dict) and isinstance(body.get("code"), str) and isinstance(body.get("message"), str)):
        body = {"code": f"http_{response.status_code}", "message": response.text[:200] or response.reason_phrase}
    request_id = body.get("request_id") or response.headers.get("X-Request-Id", "")
    cls = _BY_STATUS.get(response.status_code, ServerError if response.status_code >= 500 else ApiError)
    return cls(response.status_code, body["code"], body["message"], str(request_id), response.request.method,
               str(response.request.url), retry_after_of(response))


class TransportError(ShipyardError):
    """No answer from the API (connection refused or dropped, a timeout), after the retries
    allowed; ``__cause__`` is httpx's error."""

    def __init__(self, method: str, url: str, attempts: int, cause: httpx.TransportError):
        self.method, self.url, self.attempts = method, url, attempts
        super().__init__(f"{method} {url}: no answer after {attempts} attempt(s): {type(cause).__name__}: {cause}")


class UnexpectedAnswer(ShipyardError):
    """A success status whose body is not what the API documents: something else answered (a
    proxy's page), or the API is of a version this client does not know."""

    def __init__(self, response: httpx.Response, problem: str):
        self.status, self.body = response.status_code, response.text[:500]
        super().__init__(f"{response.request.method} {response.request.url}: {response.status_code} with a body "
                         f"that is not the API's answer ({problem}): {self.body[:200]!r}")


class WaitTimeout(ShipyardError):
    """The task had not finished when the wait's time was up; ``task`` is as last seen."""

    def __init__(self, task: Task, timeout: float):
        self.task, self.timeout = task, timeout
        super().__init__(f"task {task.id} still {task.status} after {timeout:g} s (attempts {task.attempts})")
