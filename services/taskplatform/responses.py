"""What the API answers, as models for the OpenAPI only: the handlers return the store's dicts
(``store.task_json``, ``api_keys.key_json``) as they are, unvalidated, so that no answer pays
for a second serialisation. The models say what those dicts hold, so clients (the Python client's
models, ``clients/python``) can be checked against the document, and schemathesis checks every
answer against them (``tests/test_api_openapi.py``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field

TaskStatus = Literal["scheduled", "queued", "running", "retry_wait", "succeeded", "dead", "cancelled"]


class Task(BaseModel):
    """A task as stored (``tasks`` table; the idempotency key and lease are not shown)."""

    id: str = Field(description="the task's UUID")
    tenant: str
    kind: str
    payload: dict[str, Any]
    status: TaskStatus
    attempts: int = Field(description="attempts started so far (a re-drive starts again from 0)")
    max_attempts: int
    result: Any = Field(description="what the kind returned, once succeeded (any JSON; null before)")
    error: str | None = Field(description="the last attempt's error")
    created_at: AwareDatetime
    updated_at: AwareDatetime
    run_after: AwareDatetime | None = Field(description="a scheduled task's time, a retry_wait task's next try")
    priority: int = Field(5, ge=0, le=9, description="0-9, higher first within the kind's queue (absent from a "
                                                     "release before priorities: 5)")


class TaskBatchItem(BaseModel):
    created: bool = Field(description="false: the task made earlier under this item's idempotency_key (a replay)")
    task: Task


class TaskBatch(BaseModel):
    items: list[TaskBatchItem] = Field(description="one per task of the request, in its order")


class TaskPage(BaseModel):
    items: list[Task] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last one")


class ApiKey(BaseModel):
    """An API key as listed: never its secret."""

    id: str = Field(description="16 hex digits, the `<id>` of `sy_<id>_<secret>`")
    name: str
    scopes: list[str]
    created_by: str = Field(description="the credential that created it (`jwt` or `api_key:<id>`)")
    created_at: AwareDatetime
    expires_at: AwareDatetime | None
    revoked_at: AwareDatetime | None


class CreatedApiKey(ApiKey):
    key: str = Field(description="the key, `sy_<id>_<secret>`: shown in this answer only")


class ApiKeyList(BaseModel):
    items: list[ApiKey]


WebhookEvent = Literal["task.succeeded", "task.failed", "task.dead", "task.cancelled"]


class Webhook(BaseModel):
    """A webhook subscription as read: never its secret."""

    id: str = Field(description="the subscription's UUID")
    url: str
    events: list[WebhookEvent]
    description: str
    created_at: AwareDatetime
    updated_at: AwareDatetime
    previous_secret_expires_at: AwareDatetime | None = Field(None, description=(
        "after a rotation: until when the secret it replaced still signs deliveries too (a second `v1=`); null "
        "when only the current secret signs (absent from a release before rotation: null)"))


_SIGNING = ("deliveries carry `Shipyard-Signature: t=<unix>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">`, one `v1=` "
            "per secret still signing (after a rotation, the old one's until `previous_secret_expires_at`)")


class CreatedWebhook(Webhook):
    secret: str = Field(description=f"the signing secret (`whsec_...`): shown in this answer only; {_SIGNING}")


class CallbackSecret(BaseModel):
    """The tenant's secret for the deliveries to its tasks' `callback_url`s."""

    secret: str = Field(description=f"the signing secret (`whsec_...`): shown in this answer only; {_SIGNING}")
    created_at: AwareDatetime
    updated_at: AwareDatetime = Field(description="when it was last rotated")
    previous_secret_expires_at: AwareDatetime | None = Field(description=(
        "until when the secret it replaced still signs too; null: no other secret signs"))


class WebhookPage(BaseModel):
    items: list[Webhook] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last one")


class DeliveryAttempt(BaseModel):
    attempt: int = Field(description="1 for the first try (a redelivery by hand starts again from 1)")
    status_code: int | None = Field(description="the receiver's HTTP status; null when none came")
    error: str | None = Field(description="why the attempt failed (a status outside 2xx, a timeout, a refused "
                                          "address, a connection error); null when it succeeded")
    duration_ms: float
    at: AwareDatetime


class Delivery(BaseModel):
    """One event sent (or to be sent) to one subscription."""

    id: str
    subscription_id: str | None = Field(description="the subscription it is for; null for a task's `callback_url`")
    callback_url: str | None = Field(None, description="a task's callback: where it goes; null for a subscription's "
                                                       "(absent from a release before callbacks: null)")
    event_id: str = Field(description="the idempotency id, `Shipyard-Event-Id`: the same on every attempt")
    event_type: WebhookEvent
    task_id: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int = Field(description="attempts made since it was (re)queued")
    next_attempt_at: AwareDatetime | None = Field(description="when a pending delivery is tried next")
    created_at: AwareDatetime
    updated_at: AwareDatetime
    log: list[DeliveryAttempt] = Field(description="its most recent attempts, newest first")


class DeliveryPage(BaseModel):
    items: list[Delivery] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last one")


def answer(model: type[BaseModel] | None, status: int, description: str, links: dict | None = None) -> dict[int, dict]:
    """An OpenAPI ``responses`` entry for a route's success, with the ``links`` to the
    operations its answer leads to (``links_to``)."""
    entry: dict = {"description": description}
    if model is not None:
        entry["model"] = model
    if links:
        entry["links"] = links
    return {status: entry}


def links_to(parameter: str, pointer: str, **operations: str) -> dict[str, dict]:
    """OpenAPI links (``Name=operation_id``) to operations taking ``parameter`` from the answer's
    body at the JSON ``pointer`` (``/id``): a client — and schemathesis' stateful phase — goes
    from a created object to what can be done with it."""
    return {name: {"operationId": operation, "parameters": {parameter: f"$response.body#{pointer}"},
                   "description": f"`{parameter}` is the answer's `{pointer[1:]}`"}
            for name, operation in operations.items()}
