"""Each operation of the API as data: method, path, query, body, idempotency key and the model
of its answer. The sync and async clients send the same ``Call``s, so their surfaces cannot
drift apart."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel

from shipyard_tasks.models import (ApiKey, ApiKeyList, CallbackSecret, CreatedApiKey, CreatedWebhook, Delivery,
                                   DeliveryPage, Task, TaskBatch, TaskPage, Webhook, WebhookPage)


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    answer: type[BaseModel]
    params: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    idempotency_key: str | None = None
    # Each task of a batch carries its own key in the body: sent again, it makes nothing twice.
    keys_in_body: bool = False

    @property
    def headers(self) -> dict[str, str]:
        return {"Idempotency-Key": self.idempotency_key} if self.idempotency_key else {}

    @property
    def idempotent(self) -> bool:
        """Whether sending it again after a lost answer cannot make the API act twice."""
        return self.idempotency_key is not None or self.keys_in_body


@dataclass(frozen=True)
class NewTask:
    """One task of ``create_tasks`` (a batch): what ``create_task`` takes. Without an
    ``idempotency_key`` one is generated, so the batch may be sent again after a lost answer."""
    kind: str
    payload: dict[str, Any] | None = None
    idempotency_key: str | None = None
    delay_seconds: float | None = None
    run_at: dt.datetime | None = None
    priority: int | None = None
    callback_url: str | None = None


def _segment(value: str) -> str:
    """A path parameter, quoted whole: an id with ``/`` or ``?`` cannot reach another route."""
    if not value:
        raise ValueError("an id must not be empty")
    return quote(value, safe="")


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


def _task_body(task: NewTask) -> dict[str, Any]:
    if task.delay_seconds is not None and task.run_at is not None:
        raise ValueError("give run_at or delay_seconds, not both")
    body: dict[str, Any] = {"kind": task.kind, "payload": task.payload or {}}
    if task.delay_seconds is not None:
        body["delay_seconds"] = float(task.delay_seconds)
    if task.run_at is not None:
        if task.run_at.tzinfo is None:
            raise ValueError("run_at needs a time zone (e.g. datetime.now(timezone.utc)); the API refuses a naive time")
        body["run_at"] = task.run_at.isoformat()
    for name in ("priority", "callback_url"):
        if getattr(task, name) is not None:
            body[name] = getattr(task, name)
    return body


def create_task(task: NewTask) -> Call:
    """A create always carries an idempotency key (a fresh one unless given), so that sending
    it again after a lost answer returns the first task instead of making a second."""
    return Call("POST", "/v1/tasks", Task, body=_task_body(task),
                idempotency_key=task.idempotency_key or new_idempotency_key())


def create_tasks(tasks: list[NewTask]) -> Call:
    """A batch, each task with its own key (a fresh one unless given), for the same reason."""
    if not tasks:
        raise ValueError("a batch needs one task at least")
    body = {"tasks": [{**_task_body(task), "idempotency_key": task.idempotency_key or new_idempotency_key()}
                      for task in tasks]}
    return Call("POST", "/v1/tasks:batch", TaskBatch, body=body, keys_in_body=True)


def get_task(task_id: str) -> Call:
    return Call("GET", f"/v1/tasks/{_segment(task_id)}", Task)


def list_tasks(status: str | None, kind: str | None, limit: int | None, cursor: str | None) -> Call:
    params = {name: value for name, value in (("status", status), ("kind", kind), ("limit", limit), ("cursor", cursor))
              if value is not None}
    return Call("GET", "/v1/tasks", TaskPage, params=params)


def cancel_task(task_id: str) -> Call:
    return Call("POST", f"/v1/tasks/{_segment(task_id)}/cancel", Task)


def retry_task(task_id: str) -> Call:
    return Call("POST", f"/v1/tasks/{_segment(task_id)}/retry", Task)


def create_api_key(name: str, scopes: list[str], expires_in_seconds: int | None) -> Call:
    body: dict[str, Any] = {"name": name, "scopes": list(scopes)}
    if expires_in_seconds is not None:
        body["expires_in_seconds"] = expires_in_seconds
    return Call("POST", "/v1/api-keys", CreatedApiKey, body=body)


def list_api_keys() -> Call:
    return Call("GET", "/v1/api-keys", ApiKeyList)


def revoke_api_key(key_id: str) -> Call:
    return Call("DELETE", f"/v1/api-keys/{_segment(key_id)}", ApiKey)


def _page_params(limit: int | None, cursor: str | None) -> dict[str, Any]:
    return {name: value for name, value in (("limit", limit), ("cursor", cursor)) if value is not None}


def create_webhook(url: str, events: list[str], description: str | None) -> Call:
    body: dict[str, Any] = {"url": url, "events": list(events)}
    if description is not None:
        body["description"] = description
    return Call("POST", "/v1/webhooks", CreatedWebhook, body=body)


def get_webhook(webhook_id: str) -> Call:
    return Call("GET", f"/v1/webhooks/{_segment(webhook_id)}", Webhook)


def list_webhooks(limit: int | None, cursor: str | None) -> Call:
    return Call("GET", "/v1/webhooks", WebhookPage, params=_page_params(limit, cursor))


def list_deliveries(webhook_id: str, limit: int | None, cursor: str | None) -> Call:
    return Call("GET", f"/v1/webhooks/{_segment(webhook_id)}/deliveries", DeliveryPage,
                params=_page_params(limit, cursor))


def redeliver(webhook_id: str, delivery_id: str) -> Call:
    return Call("POST", f"/v1/webhooks/{_segment(webhook_id)}/deliveries/{_segment(delivery_id)}/redeliver", Delivery)


def _overlap(overlap_seconds: int | None) -> dict[str, Any] | None:
    return None if overlap_seconds is None else {"overlap_seconds": overlap_seconds}


def rotate_webhook_secret(webhook_id: str, overlap_seconds: int | None) -> Call:
    return Call("POST", f"/v1/webhooks/{_segment(webhook_id)}/rotate-secret", CreatedWebhook,
                body=_overlap(overlap_seconds))


def set_callback_secret(overlap_seconds: int | None) -> Call:
    return Call("POST", "/v1/callbacks/secret", CallbackSecret, body=_overlap(overlap_seconds))


def list_callback_deliveries(limit: int | None, cursor: str | None) -> Call:
    return Call("GET", "/v1/callbacks/deliveries", DeliveryPage, params=_page_params(limit, cursor))


def redeliver_callback(delivery_id: str) -> Call:
    return Call("POST", f"/v1/callbacks/deliveries/{_segment(delivery_id)}/redeliver", Delivery)
