"""What the API answers, as pydantic models. They mirror the components of the API's OpenAPI
(``Task``, ``TaskBatch``, ``TaskPage``, ``ApiKey``, ``CreatedApiKey``, ``ApiKeyList``, the webhooks' and
callbacks', ``ErrorBody``): field names
and required-ness are checked against the document by ``tests/test_models_match_openapi.py``.

Unknown fields are ignored, so a newer API that adds a field does not break an older client."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

TaskStatus = Literal["scheduled", "queued", "running", "retry_wait", "succeeded", "dead", "cancelled"]

# A task in one of these will not change again by itself (only a re-drive moves a dead one).
FINISHED: frozenset[str] = frozenset({"succeeded", "dead", "cancelled"})


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Task(_Answer):
    id: str
    tenant: str
    kind: str
    payload: dict[str, Any]
    status: TaskStatus
    attempts: int
    max_attempts: int
    result: Any
    error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    run_after: dt.datetime | None
    priority: int = 5  # 0-9, higher first within the kind's queue (an API before priorities: 5)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class TaskBatchItem(_Answer):
    created: bool  # False: the task made earlier under this item's idempotency key (a replay)
    task: Task


class TaskBatch(_Answer):
    items: list[TaskBatchItem]  # one per task sent, in the order sent

    @property
    def tasks(self) -> list[Task]:
        return [item.task for item in self.items]


class TaskPage(_Answer):
    items: list[Task]
    next_cursor: str | None


class ApiKey(_Answer):
    id: str
    name: str
    scopes: list[str]
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None


class CreatedApiKey(ApiKey):
    key: str  # sy_<id>_<secret>: the API shows it this once


class ApiKeyList(_Answer):
    items: list[ApiKey]


WebhookEvent = Literal["task.succeeded", "task.failed", "task.dead", "task.cancelled"]


class Webhook(_Answer):
    id: str
    url: str
    events: list[WebhookEvent]
    description: str
    created_at: dt.datetime
    updated_at: dt.datetime
    # After a rotation: until when the replaced secret still signs too (None: only the current one).
    previous_secret_expires_at: dt.datetime | None = None


class CreatedWebhook(Webhook):
    secret: str  # whsec_...: the API shows it this once; verify deliveries with it (shipyard_tasks.webhooks)


class CallbackSecret(_Answer):
    """The tenant's secret for the deliveries to its tasks' ``callback_url``s."""
    secret: str  # whsec_...: the API shows it this once
    created_at: dt.datetime
    updated_at: dt.datetime
    previous_secret_expires_at: dt.datetime | None


class WebhookPage(_Answer):
    items: list[Webhook]
    next_cursor: str | None


class DeliveryAttempt(_Answer):
    attempt: int
    status_code: int | None
    error: str | None
    duration_ms: float
    at: dt.datetime


class Delivery(_Answer):
    id: str
    subscription_id: str | None  # None: a delivery to a task's callback_url
    callback_url: str | None = None
    event_id: str
    event_type: WebhookEvent
    task_id: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    next_attempt_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    log: list[DeliveryAttempt]


class DeliveryPage(_Answer):
    items: list[Delivery]
    next_cursor: str | None


class ErrorBody(_Answer):
    code: str
    message: str
    request_id: str
