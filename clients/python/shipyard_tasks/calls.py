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

from shipyard_tasks.models import (ApiKey, ApiKeyList, CreatedApiKey, CreatedWebhook, Delivery, DeliveryPage, Task,
                                   TaskPage, Webhook, WebhookPage)


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    answer: type[BaseModel]
    params: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    idempotency_key: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Idempotency-Key": self.idempotency_key} if self.idempotency_key else {}


def _segment(value: str) -> str:
    """A path parameter, quoted whole: an id with ``/`` or ``?`` cannot reach another route."""
    if not value:
        raise ValueError("an id must not be empty")
    return quote(value, safe="")


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


def create_task(kind: str, payload: dict[str, Any] | None, idempotency_key: str | None,
                delay_seconds: float | None, run_at: dt.datetime | None) -> Call:
    """A create always carries an idempotency key (a fresh one unless given), so that sending
    it again after a lost answer returns the first task instead of making a second."""
    if delay_seconds is not None and run_at is not None:
        raise ValueError("give run_at or delay_seconds, not both")
    body: dict[str, Any] = {"kind": kind, "payload": payload or {}}
    if delay_seconds is not None:
        body["delay_seconds"] = float(delay_seconds)
    if run_at is not None:
        if run_at.tzinfo is None:
            raise ValueError("run_at needs a time zone (e.g. datetime.now(timezone.utc)); the API refuses a naive time")
        body["run_at"] = run_at.isoformat()
    return Call("POST", "/v1/tasks", Task, body=body, idempotency_key=idempotency_key or new_idempotency_key())


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
