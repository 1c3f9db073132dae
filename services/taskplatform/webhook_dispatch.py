"""The workers' webhook dispatcher: a loop of its own in each worker process that claims due
deliveries (``WebhookStore.claim_due``), sends each in an asyncio task of its own
(``webhooks.post``) and records the outcome.

Why a slow or dead receiver never slows task processing: the dispatcher shares only the event
loop and the PostgreSQL pool with the task slots. It holds at most ``webhook_concurrency``
deliveries in flight (its own bound, not the tasks' slots), each bounded by
``webhook_timeout_seconds`` from DNS to the status line, and uses a pool connection only for the
short claim and record statements, never during a request. A receiver that hangs costs one of
the dispatcher's own slots for the timeout, nothing of the tasks'.
"""

from __future__ import annotations

import asyncio
import logging
import time

from taskplatform import metrics, webhooks
from taskplatform.runtime_config import ConfigSource
from taskplatform.settings import ProcessSettings
from taskplatform.webhook_store import Claimed, WebhookStore

log = logging.getLogger("taskplatform.webhooks")


class Dispatcher:
    def __init__(self, store: WebhookStore, config: ConfigSource, settings: ProcessSettings,
                 outages: tuple[type[BaseException], ...] = ()):
        self.store, self.config, self.settings, self.outages = store, config, settings, outages
        self.inflight: dict[asyncio.Task, Claimed] = {}

    async def run(self, stopping: asyncio.Event) -> None:
        """Claim and send until ``stopping``; then ``drain`` finishes what is in flight."""
        while not stopping.is_set():
            claimed = 0
            try:
                claimed = await self.dispatch_once()
            except Exception as exc:  # noqa: BLE001 - PostgreSQL away: retried at the next poll
                if isinstance(exc, self.outages):
                    log.warning("webhook deliveries not claimed", extra={"reason": repr(exc)})
                else:
                    log.warning("webhook deliveries not claimed", exc_info=exc)
            if claimed:
                await asyncio.sleep(0)  # a full claim: ask again at once, after letting others run
                continue
            try:
                await asyncio.wait_for(stopping.wait(), self.settings.webhook_poll_seconds)
            except asyncio.TimeoutError:
                pass

    async def dispatch_once(self) -> int:
        """Claim as many due deliveries as there are free slots and start sending them; returns
        how many were claimed when the slots were all filled (0: wait for the next poll)."""
        cfg = self.config.config
        free = cfg.webhook_concurrency - len(self.inflight)
        if free <= 0:
            return 0
        lease = cfg.webhook_timeout_seconds + self.settings.webhook_lease_margin_seconds
        claims = await self.store.claim_due(free, lease)
        for claim in claims:
            task = asyncio.create_task(self._deliver(claim))
            self.inflight[task] = claim
            task.add_done_callback(self._done)
        return len(claims) if len(claims) == free else 0

    def _done(self, task: asyncio.Task) -> None:
        self.inflight.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.warning("webhook delivery not recorded", extra={"reason": repr(task.exception())})

    async def _deliver(self, claim: Claimed) -> None:
        cfg = self.config.config
        body = webhooks.event_body(str(claim.event_id), claim.event_type, claim.event_at.isoformat(), claim.task)
        started = time.perf_counter()
        if not claim.secrets:  # a callback of a tenant without a callback secret: nothing to sign with
            sent = webhooks.Sent(None, "refused: the tenant has no callback secret to sign with "
                                       "(POST /v1/callbacks/secret makes one)")
        else:
            headers = webhooks.signed_headers(claim.secrets, str(claim.event_id), claim.event_type, body)
            with metrics.WEBHOOKS_IN_FLIGHT.track_inprogress():
                sent = await webhooks.post(claim.url, headers, body, cfg.webhook_allow_private_addresses,
                                           cfg.webhook_timeout_seconds,
                                           allowed_networks=tuple(cfg.webhook_allowed_networks))
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        error = sent.error or (None if sent.ok else f"HTTP {sent.status_code}")
        retry_in = None
        if sent.ok:
            outcome, label = "succeeded", "succeeded"
        elif claim.attempts >= cfg.webhook_max_attempts:
            outcome, label = "failed", "failed"
        else:
            outcome, label = "pending", "retrying"
            retry_in = webhooks.retry_delay(claim.attempts, cfg.webhook_retry_base_seconds, cfg.webhook_retry_max_seconds)
        if await self.store.record(claim, sent.status_code, error, duration_ms, outcome, retry_in):
            metrics.WEBHOOK_DELIVERIES.labels(outcome=label).inc()
        log.info("webhook delivery", extra={
            "delivery_id": str(claim.id), "callback": claim.subscription_id is None, "event_id": str(claim.event_id),
            "event_type": claim.event_type, "attempt": claim.attempts, "status_code": sent.status_code,
            "outcome": label, "reason": sent.error, "duration_ms": duration_ms,
            "retry_in_s": round(retry_in, 2) if retry_in is not None else None})

    async def drain(self, grace_seconds: float) -> None:
        """Shutdown: what is in flight may finish within ``grace_seconds``; the rest is cancelled
        and handed back (due again at once for another worker, that attempt not counted)."""
        if not self.inflight:
            return
        await asyncio.wait(list(self.inflight), timeout=grace_seconds)
        leftovers = list(self.inflight.items())
        for task, _ in leftovers:
            task.cancel()
        for _, claim in leftovers:
            try:
                await self.store.hand_back(claim)
            except Exception as exc:  # noqa: BLE001 - its lease expires: another worker sends it later
                log.warning("webhook delivery not handed back", extra={"reason": repr(exc)})
