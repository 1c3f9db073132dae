"""``Client``: the API over httpx, blocking. Same methods as ``AsyncClient``, each sending one
``calls.Call`` through ``_send``, which resends as ``attempts.Attempts`` decides."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import httpx

from shipyard_tasks import calls
from shipyard_tasks.attempts import Attempts, Resend
from shipyard_tasks.errors import WaitTimeout
from shipyard_tasks.calls import NewTask
from shipyard_tasks.models import (ApiKey, CallbackSecret, CreatedApiKey, CreatedWebhook, Delivery, DeliveryPage, Task,
                                   TaskBatch, TaskPage, TaskStatus, Webhook, WebhookPage)
from shipyard_tasks.retries import RetryPolicy
from shipyard_tasks.session import client_headers
from shipyard_tasks.waiting import PollSchedule


class Client:
    """``Client("https://tasks.example.com", "sy_...")``: a tenant's API key or a JWT.
    ``transport``: an httpx transport (tests, proxies); ``timeout``: seconds per send."""

    def __init__(self, base_url: str, credential: str, *, timeout: float = 10.0, retry: RetryPolicy | None = None,
                 transport: httpx.BaseTransport | None = None, headers: dict[str, str] | None = None):
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport,
                                  headers=client_headers(credential, headers))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: calls.Call):
        attempts = Attempts(call, self.retry)
        # One request id for every send of the call: the API's logs group the tries.
        headers = {**call.headers, "X-Request-Id": uuid.uuid4().hex}
        while True:
            request = self._http.build_request(call.method, call.path, params=call.params, json=call.body,
                                               headers=headers)
            try:
                outcome = attempts.after_answer(self._http.send(request))
            except httpx.TransportError as error:
                outcome = attempts.after_error(error, str(request.url))
            if not isinstance(outcome, Resend):
                return outcome
            time.sleep(outcome.after_seconds)

    # Tasks

    def create_task(self, kind: str, payload: dict[str, Any] | None = None, *,
                    idempotency_key: str | None = None, delay_seconds: float | None = None,
                    run_at: dt.datetime | None = None, priority: int | None = None,
                    callback_url: str | None = None) -> Task:
        """Creates a task (202), or returns the one made earlier under ``idempotency_key``. A key is
        generated when none is given: resends after a lost answer are safe either way; give your
        own to make a retry of your whole operation safe too. ``callback_url``: where its end
        (succeeded, dead, cancelled) is POSTed, signed with the tenant's callback secret
        (``set_callback_secret`` first; ``Conflict`` ``callback_secret_missing`` otherwise)."""
        task = NewTask(kind, payload, idempotency_key, delay_seconds, run_at, priority, callback_url)
        return self._send(calls.create_task(task))

    def create_tasks(self, tasks: Iterable[NewTask]) -> TaskBatch:
        """A batch (``POST /v1/tasks:batch``), all or nothing: one task refused refuses the batch
        (the error names it, ``tasks.<index>``) and none is made. ``.items`` (and ``.tasks``) in
        the order given; ``created`` False for a task made earlier under its key. Each task gets
        a key unless it has one, so a resend after a lost answer makes nothing twice. Each task
        counts as a request of the tenant's rate limit."""
        return self._send(calls.create_tasks(list(tasks)))

    def get_task(self, task_id: str) -> Task:
        return self._send(calls.get_task(task_id))

    def list_tasks(self, *, status: TaskStatus | None = None, kind: str | None = None, limit: int | None = None,
                   cursor: str | None = None) -> TaskPage:
        """One page, newest first; ``next_cursor`` fetches the next (or use ``iter_tasks``)."""
        return self._send(calls.list_tasks(status, kind, limit, cursor))

    def iter_tasks(self, *, status: TaskStatus | None = None, kind: str | None = None,
                   page_size: int | None = None) -> Iterator[Task]:
        """Every matching task, newest first, fetching pages as the iteration reaches them."""
        cursor = None
        while True:
            page = self.list_tasks(status=status, kind=kind, limit=page_size, cursor=cursor)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def cancel_task(self, task_id: str) -> Task:
        """Cancels a scheduled, queued or retry_wait task (409 ``Conflict`` in another state)."""
        return self._send(calls.cancel_task(task_id))

    def retry_task(self, task_id: str) -> Task:
        """Re-drives a dead task: queued again, attempts from 0 (409 ``Conflict`` otherwise)."""
        return self._send(calls.retry_task(task_id))

    def wait_for_task(self, task_id: str, *, timeout: float = 60.0, poll_ceiling: float = 2.0) -> Task:
        """The task once succeeded, dead or cancelled (check ``status``); ``WaitTimeout`` (with the
        task as last seen) if it is not by ``timeout`` seconds from now."""
        schedule = PollSchedule(timeout, ceiling=poll_ceiling)
        while True:
            task = self.get_task(task_id)
            if task.finished:
                return task
            delay = schedule.next_delay()
            if delay is None:
                raise WaitTimeout(task, timeout)
            time.sleep(delay)

    # API keys (the ``admin`` scope)

    def create_api_key(self, name: str, scopes: list[str], *, expires_in_seconds: int | None = None) -> CreatedApiKey:
        """A new key for this tenant; ``.key`` is shown this once. Not resent after a lost answer
        (the API has no idempotency key for it): on ``TransportError`` list the keys to see."""
        return self._send(calls.create_api_key(name, scopes, expires_in_seconds))

    def list_api_keys(self) -> list[ApiKey]:
        return self._send(calls.list_api_keys()).items

    def revoke_api_key(self, key_id: str) -> ApiKey:
        return self._send(calls.revoke_api_key(key_id))

    # Webhooks (the ``webhooks:write`` scope)

    def create_webhook(self, url: str, events: list[str], *, description: str | None = None) -> CreatedWebhook:
        """A subscription; ``.secret`` is shown this once (``shipyard_tasks.webhooks.verify``
        checks deliveries with it). Not resent after a lost answer: list the webhooks to see."""
        return self._send(calls.create_webhook(url, events, description))

    def get_webhook(self, webhook_id: str) -> Webhook:
        return self._send(calls.get_webhook(webhook_id))

    def list_webhooks(self, *, limit: int | None = None, cursor: str | None = None) -> WebhookPage:
        return self._send(calls.list_webhooks(limit, cursor))

    def list_deliveries(self, webhook_id: str, *, limit: int | None = None, cursor: str | None = None) -> DeliveryPage:
        """One page of the subscription's deliveries, newest first, each with its recent attempts."""
        return self._send(calls.list_deliveries(webhook_id, limit, cursor))

    def redeliver(self, webhook_id: str, delivery_id: str) -> Delivery:
        """A succeeded or failed delivery sent again (same event id; 409 ``Conflict`` while pending)."""
        return self._send(calls.redeliver(webhook_id, delivery_id))

    def rotate_webhook_secret(self, webhook_id: str, *, overlap_seconds: int | None = None) -> CreatedWebhook:
        """A new signing secret (``.secret``, shown this once); the old one signs too (a second
        ``v1=``) for ``overlap_seconds`` (the API's default: a day). Not resent after a lost answer
        (a second rotation would drop the secret the first one made): read the webhook to see."""
        return self._send(calls.rotate_webhook_secret(webhook_id, overlap_seconds))

    # Callbacks: deliveries to the tasks' ``callback_url`` (the ``webhooks:write`` scope)

    def set_callback_secret(self, *, overlap_seconds: int | None = None) -> CallbackSecret:
        """The tenant's callback signing secret, made or rotated (as ``rotate_webhook_secret``)."""
        return self._send(calls.set_callback_secret(overlap_seconds))

    def list_callback_deliveries(self, *, limit: int | None = None, cursor: str | None = None) -> DeliveryPage:
        """One page of the deliveries to the tenant's callback URLs, newest first."""
        return self._send(calls.list_callback_deliveries(limit, cursor))

    def redeliver_callback(self, delivery_id: str) -> Delivery:
        """A succeeded or failed callback delivery sent again (same event id)."""
        return self._send(calls.redeliver_callback(delivery_id))
