"""The worker: consumes the Redis stream, runs tasks, records outcomes in PostgreSQL.

Each queue a kind declares has its own lane (``lanes.Lane``): its streams, its slots (runtime
config ``queues``, per worker), its backlog; its rate limit is the cluster's (``queue_rate``: one
bucket in Redis that every worker takes a start from). A lane reads only when it has a free slot,
and a limited one no more than its burst, so a queue at its limit neither takes another's slots
nor holds many messages another worker could start.

Order of truth: claim the row (conditional UPDATE) → run → record the outcome → XACK. A crash
anywhere leaves either an un-acked message (reclaimed with XAUTOCLAIM once idle) or a row
whose lease expires (recovered from PostgreSQL, `_recover`); the conditional UPDATEs make the
second delivery of a finished task a no-op, so nothing is lost and nothing completes twice.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import os
import random
import signal
import socket
import time
import uuid

import redis.exceptions
from prometheus_client import start_http_server

from taskplatform import (batching, db_credentials, kinds, lanes, limits, logs, metrics, queue, queue_rate,
                          recurrence, schedules, store, webhook_dispatch, webhook_store)
from taskplatform.config_report import ConfigReport
from taskplatform.runtime_config import ConfigSource
from taskplatform.secrets import SecretSource
from taskplatform.settings import ProcessSettings

log = logging.getLogger("taskplatform.worker")

# PostgreSQL or Redis away for a while (a restart, a failover): expected, retried, and logged
# without a traceback each time; anything else is a bug and logs its traceback.
OUTAGES = store.UNAVAILABLE + (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def _trouble(exc: BaseException) -> dict:
    """Logging arguments for a caught exception: its traceback unless it is an outage."""
    return {"exc_info": exc} if not isinstance(exc, OUTAGES) else {"extra": {"reason": repr(exc)}}


def retry_delay(attempt: int, base: float, cap: float, rng: random.Random = random.Random()) -> float:
    """Exponential backoff with full jitter in [delay/2, delay]: attempt 1 → ~base."""
    delay = min(cap, base * (2 ** (attempt - 1)))
    return delay * (0.5 + rng.random() / 2)


class Worker:
    def __init__(self, settings: ProcessSettings, secrets: SecretSource, config: ConfigSource):
        self.settings, self.secrets, self.config = settings, secrets, config
        self.consumer = f"{socket.gethostname()}-{os.getpid()}"
        kinds.registry(settings.kinds_packages)  # the kinds say which queues there are
        self.lanes = lanes.Lanes(kinds.queues(), settings.release_colour)
        self.streams = self.lanes.streams
        # Who runs a task, for the kinds that say so (`smoke`: the release's smoke test checks
        # that the new colour's workers took its task).
        self.runner = {"colour": settings.release_colour, "version": settings.build_version, "worker": self.consumer}
        # Per running task: its stream message (None when recovered from PostgreSQL) and claim.
        self.inflight: dict[asyncio.Task, tuple[queue.Message | None, store.Claimed | None]] = {}
        # Tasks taken but not started yet wait in their lane's backlog (``Lane.add``): a read
        # asks for as many as there are free slots, and the concurrency may be lowered while it
        # waits; tasks recovered from PostgreSQL (`_recover`) wait there too.
        self.stopping = asyncio.Event()
        self.kind_runner = kinds.Runner(settings.kind_threads)
        self.stuck_threads = 0
        metrics.WORKER_SLOTS.set_function(lambda: sum(self.config.config.concurrency_of(lane.name)
                                                      for lane in self.lanes))
        for lane in self.lanes:
            metrics.QUEUE_SLOTS.labels(queue=lane.name).set_function(
                lambda name=lane.name: self.config.config.concurrency_of(name))
            metrics.QUEUE_RUNNING.labels(queue=lane.name).set_function(lambda lane=lane: len(lane.running))
        metrics.count_kinds(metrics.TASKS_COMPLETED, metrics.TASKS_FAILED, metrics.TASKS_DEAD, metrics.SCHEDULES_FIRED,
                            metrics.TASKS_DELETED)
        for policy in recurrence.CATCHUP_POLICIES:
            metrics.SCHEDULE_OCCURRENCES_SKIPPED.labels(catchup=policy)
        for outcome in metrics.WEBHOOK_OUTCOMES:
            metrics.WEBHOOK_DELIVERIES.labels(outcome=outcome)
        metrics.set_release(settings.release_colour, settings.build_version)
        self.store: store.TaskStore | None = None
        self.schedules: schedules.ScheduleStore | None = None
        self.webhooks: webhook_dispatch.Dispatcher | None = None
        self.redis = None
        self.rate: queue_rate.ClusterRate | None = None
        self.read_in_turn: queue.InTurnReader | None = None
        # The attempts running at once share their claims, completions and acks (``batching``):
        # one statement or command for all that are ready while the previous one is out.
        self.claims = batching.Batch(self._claim_batch)
        self.completions = batching.Batch(self._complete_batch)
        self.acks = batching.Batch(self._ack_batch)

    # --- processing -----------------------------------------------------------------------
    async def _process(self, message: queue.Message | None, task_id: str,
                       charged: tuple[str, float] | None = None) -> None:
        logs.task_id.set(task_id)  # on every line logged while processing it (its own asyncio task)
        try:
            await self._run(message, task_id, charged)
        except Exception as exc:  # noqa: BLE001
            # PostgreSQL or Redis failed mid-task: the message stays pending, the lease expires,
            # and the task is picked up again. Nothing to do here but say so.
            log.warning("task processing interrupted", **_trouble(exc))

    async def _run(self, message: queue.Message | None, task_id: str, charged: tuple[str, float] | None = None) -> None:
        """``charged``: the queue and rate whose cluster bucket paid for this start, if one did
        (given back when the task is not claimed here: a duplicate must not spend the rate)."""
        task = asyncio.current_task()
        try:
            claim, dead_kind = await self.claims.submit(uuid.UUID(task_id))
        except ValueError:
            claim, dead_kind = None, None  # not a task id: drop the message
        if dead_kind:  # its worker died on its last attempt (a crash loop): it ends here
            metrics.TASKS_DEAD.labels(kind=metrics.kind_label(dead_kind)).inc()
            log.info("task out of attempts after losing its worker", extra={"task_id": task_id, "status": "dead"})
        if claim is None:  # finished, cancelled, dead, running elsewhere under a live lease, or of a
            # disabled kind: queued, the reconciler brings it back once its kind is enabled again
            if charged:
                try:
                    await self.rate.give_back(*charged)
                except OUTAGES:  # Redis away: a start of the rate lost, the message still acked
                    pass
            await self._ack(message)
            return
        self.inflight[task] = (message, claim)
        if claim.attempts == 1:
            metrics.TASK_QUEUE_WAIT_SECONDS.labels(kind=claim.kind).observe(claim.queued_seconds)
        timeout = self.config.config.timeout_for(claim.kind)
        started = time.perf_counter()
        context = kinds.TaskContext(str(claim.id), claim.attempts, self.runner)
        body = asyncio.create_task(self.kind_runner.run(kinds.registry()[claim.kind], claim.payload, context))
        body.add_done_callback(_retrieve)
        try:
            with metrics.TASKS_RUNNING.track_inprogress():
                await asyncio.wait({body}, timeout=timeout)
        except asyncio.CancelledError:
            body.cancel()  # the worker let go of this attempt (shutdown): so does its body
            raise
        metrics.TASK_RUN_SECONDS.labels(kind=claim.kind).observe(time.perf_counter() - started)
        if not body.done():
            # The body is cancelled but not awaited: one that ignores cancellation runs on, yet
            # records nothing, since outcomes are recorded here, fenced by the lease token.
            body.cancel()
            metrics.TASKS_TIMED_OUT.inc()
            await self._fail(claim, f"TimeoutError: attempt {claim.attempts} ran longer than {timeout:g} s "
                                    f"(task_timeout_seconds); cancelled")
        elif body.cancelled():
            await self._fail(claim, "CancelledError: the task cancelled itself")
        elif body.exception() is not None:  # any failure of task code is the task's failure
            exc = body.exception()  # a payload its kind's model refuses never will fit: no retry
            await self._fail(claim, f"{exc.__class__.__name__}: {exc}", final=isinstance(exc, kinds.PayloadRejected))
        elif await self.completions.submit((claim, body.result())):
            metrics.TASKS_COMPLETED.labels(kind=metrics.kind_label(claim.kind)).inc()
            # The task's last hop in a trace (`make trace`); its task_id comes from the context.
            log.info("task succeeded", extra={"attempt": claim.attempts,
                                              "run_ms": round((time.perf_counter() - started) * 1000, 2)})
        self.inflight[task] = (message, None)  # recorded: no lease to keep or hand back
        await self._ack(message)

    async def _ack(self, message: queue.Message | None) -> None:
        if message is not None:  # a task recovered from PostgreSQL came without a message
            await self.acks.submit(message)

    async def _claim_batch(self, task_ids: list[uuid.UUID]) -> list[tuple[store.Claimed | None, str | None]]:
        """The claims of the attempts ready to start, in one statement. A task id twice in one
        batch (two messages of one task) is claimed once: the second gets no claim, as it would
        have, one after the other."""
        claimed = await self.store.claim_many(task_ids, self.settings.lease_seconds,
                                              self.config.config.runnable_kinds())
        seen: set[uuid.UUID] = set()
        answers = []
        for task_id in task_ids:
            answers.append((None, None) if task_id in seen else claimed[task_id])
            seen.add(task_id)
        return answers

    async def _complete_batch(self, outcomes: list[tuple[store.Claimed, dict]]) -> list[bool]:
        """The successes recorded, in one statement (one commit): whether each was this attempt's
        to record (its lease token still held)."""
        completed = await self.store.complete_many(outcomes)
        return [claim.id in completed for claim, _ in outcomes]

    async def _ack_batch(self, messages: list[queue.Message]) -> list[None]:
        """One XACK per stream for the messages whose outcomes are recorded, in one round trip."""
        by_stream: dict[str, list[str]] = collections.defaultdict(list)
        for message in messages:
            by_stream[message.stream].append(message.id)
        if len(by_stream) == 1:
            ((stream, ids),) = by_stream.items()
            await self.redis.xack(stream, queue.GROUP, *ids)
        else:
            pipe = self.redis.pipeline(transaction=False)
            for stream, ids in by_stream.items():
                pipe.xack(stream, queue.GROUP, *ids)
            await pipe.execute()
        return [None] * len(messages)

    async def _fail(self, claim: store.Claimed, error: str, final: bool = False) -> None:
        cfg = self.config.config
        last = final or claim.attempts >= claim.max_attempts
        delay = None if last else retry_delay(claim.attempts, cfg.retry_base_seconds, cfg.retry_max_seconds)
        new_status = await self.store.fail(claim, error, delay)
        kind = metrics.kind_label(claim.kind)
        if new_status == "dead":
            metrics.TASKS_DEAD.labels(kind=kind).inc()
        elif new_status == "retry_wait":
            metrics.TASKS_FAILED.labels(kind=kind).inc()
        log.info("task failed", extra={"task_id": str(claim.id), "attempt": claim.attempts, "status": new_status,
                                       "reason": error[:200], "retry_in_s": round(delay, 2) if delay else None})

    def _spawn(self, message: queue.Message | None, task_id: str, lane: lanes.Lane | None = None,
               charged: tuple[str, float] | None = None) -> None:
        if lane is None:  # a message's lane is its stream's
            lane = self.lanes.by_stream.get(message.stream) if message else None
            lane = lane if lane is not None else self.lanes.route(None)
        task = asyncio.create_task(self._process(message, task_id, charged))
        self.inflight[task] = (message, None)
        lane.running.add(task)
        task.add_done_callback(lambda done: self._done(done, lane))

    def _done(self, task: asyncio.Task, lane: lanes.Lane) -> None:
        self.inflight.pop(task, None)
        lane.running.discard(task)

    async def _consume(self) -> None:
        await asyncio.gather(*(self._consume_lane(lane) for lane in self.lanes))

    async def _consume_lane(self, lane: lanes.Lane) -> None:
        """One queue: start what its backlog holds, each when the queue's rate limit allows a
        start, else read its streams, while it has a free slot (both limits read from the applied
        config each time: a change applies at once). Polls every 10 ms while the queue is full,
        as one pool did, and at most every 50 ms while its rate holds a start back."""
        backoff = 0.5
        while not self.stopping.is_set():
            cfg = self.config.config
            free, rate = lane.free(cfg.concurrency_of(lane.name)), cfg.rate_of(lane.name)
            if free <= 0:
                await asyncio.sleep(0.01)
                continue
            if len(lane):
                # A start allowed by the queue's rate limit (the cluster's), first. Then what was
                # recovered or read before starts, highest priority first,
                # unless a higher band's stream holds one (behind a backlog of recovered low ones).
                wait, charged = await self._take_start(lane, rate)
                if wait > 0:
                    await asyncio.sleep(min(wait, 0.05))
                    continue
                # Not while Redis is away: recovery from PostgreSQL must not wait for its timeouts.
                # Nor right after a read of this lane (``_read``): it asked the higher bands
                # first, and what it took starts now (a look per task read cost a round trip
                # before each start: latency, and drain rate).
                if lane.redis_ok and not lane.just_read:
                    try:
                        above = lane.streams_above(lane.peek().priority)
                        self._add(lane, await self.read_in_turn(self.consumer, above, 1))
                    except Exception as exc:  # noqa: BLE001 - what waits here starts; the next read retries
                        lane.redis_ok = False
                        log.warning("redis read failed; starting what waits", extra={"reason": repr(exc)})
                waiting = lane.pop()
                self._spawn(waiting.message, waiting.task_id, lane, charged)
                if rate is None:
                    # Without a rate limit, every free slot starts now from what waits, highest
                    # priority first: they start together, at the moment of the one look above.
                    for _ in range(min(free - 1, len(lane))):
                        waiting = lane.pop()
                        self._spawn(waiting.message, waiting.task_id, lane)
                lane.just_read = False  # what still waits gets a look before it starts
                continue
            try:
                # A limited queue takes no more than its burst at once: what it holds waits here
                # for the cluster's bucket, and another worker could have started it.
                await self._read(lane, free if rate is None else min(free, math.ceil(queue_rate.burst_of(rate))),
                                 block_ms=1000)
                backoff, lane.redis_ok, lane.just_read = 0.5, True, True
            except Exception as exc:  # noqa: BLE001 - Redis restart/failover: wait and retry
                lane.redis_ok = False
                if "NOGROUP" in str(exc):
                    await self._ensure_group()
                    continue
                log.warning("redis read failed; retrying", extra={"reason": repr(exc), "in_s": backoff,
                                                                  "queue": lane.name})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5)

    async def _take_start(self, lane: lanes.Lane, rate: float | None) -> tuple[float, tuple[str, float] | None]:
        """A start of ``lane``'s queue from the cluster's bucket (``queue_rate``): (0, what paid
        for it) when taken, else (the seconds until one may be, None). While Redis is away (this
        lane's last read of it failed, or this call fails) from the worker's own bucket at the
        same rate, so recovery from PostgreSQL goes on: the cluster's bound is then the rate
        times the workers."""
        if rate is None:
            return 0.0, None
        if lane.redis_ok:
            try:
                grant = await self.rate.take(lane.name, rate)
                if lane.rate_fallback:
                    lane.rate_fallback = False
                    log.info("queue rate limit cluster-wide again", extra={"queue": lane.name})
                return (0.0, (lane.name, rate)) if grant.granted else (grant.wait_seconds, None)
            except Exception as exc:  # noqa: BLE001 - away, or refusing (OOM, BUSY): the lane goes on
                lane.redis_ok = False
                if not lane.rate_fallback:
                    lane.rate_fallback = True
                    log.warning("queue rate limit per worker while Redis is away",
                                extra={"queue": lane.name, "reason": repr(exc)})
        wait = lane.bucket.wait(rate)
        if wait == 0:
            lane.bucket.take(rate)
        return wait, None

    def use_redis(self, client) -> None:
        """``client`` for the streams, the queues' rate buckets and the reads in turn."""
        self.redis = client
        self.rate = queue_rate.ClusterRate(client)
        self.read_in_turn = queue.InTurnReader(client)

    async def _read(self, lane: lanes.Lane, count: int, block_ms: int) -> None:
        """Up to ``count`` new messages of ``lane``'s streams into its backlog: each stream
        asked in turn, highest band first, without waiting (one round trip:
        ``queue.InTurnReader``), so that a high-priority task is taken before the lower ones
        already waiting; when all are empty, one read of all of them that waits up to
        ``block_ms`` for the next message (one at most per stream)."""
        if not self._add(lane, await self.read_in_turn(self.consumer, lane.streams, count)):
            self._add(lane, await self.redis.xreadgroup(queue.GROUP, self.consumer,
                                                        {stream: ">" for stream in lane.streams},
                                                        count=1, block=block_ms))

    @staticmethod
    def _add(lane: lanes.Lane, replies) -> int:
        """Messages read (XREADGROUP's answer) into ``lane``'s backlog; how many."""
        taken = 0
        for stream, messages in replies or []:
            for message_id, fields in messages:
                stream = _text(stream)
                lane.add(lanes.Waiting(queue.Message(stream, _text(message_id)), _text(fields.get(b"task_id", b"")),
                                       lanes.priority_of_stream(stream)))
                taken += 1
        return taken

    async def _ensure_group(self) -> None:
        try:
            for stream in self.streams:
                await queue.ensure_group(self.redis, stream)
        except Exception as exc:  # noqa: BLE001
            log.warning("cannot create the consumer group yet", extra={"reason": repr(exc)})
            await asyncio.sleep(1)

    # --- maintenance: reclaim, retries, reconciler, leases, heartbeat ---------------------
    async def _renew_leases(self) -> None:
        claims = [c for _, c in self.inflight.values() if c is not None]
        renewed = await self.store.renew_leases(claims, self.settings.lease_seconds)
        for claim in claims:
            if claim.id not in renewed and any(c is claim for _, c in self.inflight.values()):
                # Expired and re-claimed elsewhere (this worker stalled), unless its outcome is
                # being recorded right now: anything a lost attempt records is refused by the
                # token fence, so this is only said.
                log.warning("lease lost", extra={"task_id": str(claim.id), "attempt": claim.attempts})

    def _beat(self) -> None:
        """Heartbeat: its age is the liveness probe; its content says which config is applied."""
        loaded = self.config.current()
        beat = self.settings.heartbeat_file
        with open(f"{beat}.tmp", "w") as out:
            json.dump({"at": time.time(), "config_version": loaded.config.version, "config_hash": loaded.hash,
                       "config_reload": self.config.reload_state()}, out)
        os.replace(f"{beat}.tmp", beat)  # readers never see half a file

    async def _maintain_once(self) -> None:
        await self._renew_leases()
        await self._recover()  # PostgreSQL only: recovery goes on while Redis is away
        for stream in self.streams:
            await self._reclaim(stream)
        due = await self.store.due_retries() + await self.store.due_scheduled() + await self._fire_schedules()
        for route in await self.store.routes(due):
            await queue.enqueue(self.redis, str(route.id), queue.stream_for(self._queue_of(route), route.priority))
        await self._retain()
        for stream in self.streams:
            forgotten = await queue.forget_idle_consumers(self.redis, self.settings.consumer_forget_idle_seconds,
                                                          stream)
            if forgotten:
                metrics.CONSUMERS_FORGOTTEN.inc(len(forgotten))
                log.info("idle consumers removed from the group", extra={"consumers": forgotten, "stream": stream})

    async def _fire_schedules(self) -> list[uuid.UUID]:
        """The tasks of the schedules' occurrences due now, created (``ScheduleStore.fire_due``:
        once each, whatever the number of workers), to be enqueued. Should the enqueue fail, they
        are queued rows, which the reconciler takes after ``reconcile_after_seconds``."""
        firing = await self.schedules.fire_due(self.config.config.task_max_attempts)
        for kind in firing.kinds:
            metrics.SCHEDULES_FIRED.labels(kind=metrics.kind_label(kind)).inc()
        for policy, count in firing.skipped.items():
            metrics.SCHEDULE_OCCURRENCES_SKIPPED.labels(catchup=policy).inc(count)
        if firing.task_ids or firing.skipped:
            log.info("schedules fired", extra={"tasks": len(firing.task_ids), "skipped": firing.skipped})
        for schedule_id, why in firing.unreadable.items():
            log.warning("schedule not fired", extra={"schedule_id": str(schedule_id), "reason": why})
        return firing.task_ids

    async def _retain(self) -> None:
        """Retention: one batch of finished tasks past their period deleted (``delete_finished``),
        and one of finished webhook deliveries past theirs, when the runtime config gives them. A
        batch per pass, so a backlog (the first run after retention is set) is worked off in short
        statements, never one long one."""
        cfg = self.config.config
        if cfg.webhook_delivery_retention_seconds:
            deliveries = await self.webhooks.store.delete_finished(cfg.webhook_delivery_retention_seconds)
            metrics.WEBHOOK_DELIVERIES_DELETED.inc(deliveries)
        if not cfg.retains():
            return
        deleted = await self.store.delete_finished(cfg.retention_seconds, cfg.retention_seconds_by_kind,
                                                   cfg.retention_seconds_by_tenant)
        for kind, count in collections.Counter(metrics.kind_label(kind) for kind in deleted).items():
            metrics.TASKS_DELETED.labels(kind=kind).inc(count)

    def _queue_of(self, route: store.Route) -> str:
        """The queue a task goes to: the one its row names if this worker runs it, else its
        kind's (a row an older release wrote names none)."""
        return route.queue if route.queue in self.lanes.by_name else kinds.queue_of(route.kind)

    async def _reclaim(self, stream: str) -> None:
        """Messages of ``stream`` pending under another consumer for ``claim_idle_seconds`` (its
        worker died), as many as its queue has free slots."""
        lane = self.lanes.by_stream[stream]
        free = lane.free(self.config.config.concurrency_of(lane.name)) - len(lane)
        if free <= 0:
            return
        idle_ms = int(self.settings.claim_idle_seconds * 1000)
        reply = await self.redis.xautoclaim(stream, queue.GROUP, self.consumer, idle_ms, "0-0", count=free)
        for message_id, fields in (reply[1] if reply else []):
            if fields:  # entries trimmed away come back empty
                lane.add(lanes.Waiting(queue.Message(stream, _text(message_id)), _text(fields.get(b"task_id", b"")),
                                       lanes.priority_of_stream(stream)))
            else:
                await self.redis.xack(stream, queue.GROUP, message_id)

    async def _recover(self) -> None:
        """Tasks PostgreSQL says should run but that no message may bring: running under an
        expired lease (their worker died) or queued longer than ``reconcile_after_seconds``
        (their enqueue failed, a Redis failover lost their message, or a backlog holds it).
        They go straight from PostgreSQL into this worker's own queue, which is served before
        the stream: a backlog cannot postpone them, and the stream gets no duplicates. Each goes
        to its queue's lane (its row's queue, else its kind's), by its priority. Bounded: at most
        as many as the worker's slots over all queues wait here; a message of theirs still in
        the stream finds them claimed or done, and is dropped."""
        cfg = self.config.config
        room = sum(cfg.concurrency_of(lane.name) for lane in self.lanes) - self.lanes.backlog_size()
        if room <= 0:
            return
        lost, dead = await self.store.expire_leases(room)
        overdue = await self.store.take_overdue(cfg.reconcile_after_seconds, room - len(lost), cfg.runnable_kinds())
        for route in await self.store.routes(lost + overdue):
            self.lanes.route(self._queue_of(route)).add(lanes.Waiting(None, str(route.id), route.priority))
        if lost:
            metrics.TASKS_RECOVERED.labels(reason="lease_expired").inc(len(lost))
        if overdue:
            metrics.TASKS_RECOVERED.labels(reason="queued_too_long").inc(len(overdue))
        if lost or overdue:
            log.info("recovered tasks from PostgreSQL",
                     extra={"lease_expired": len(lost), "queued_too_long": len(overdue)})
        for kind in dead:
            metrics.TASKS_DEAD.labels(kind=metrics.kind_label(kind)).inc()
        if dead:
            log.info("tasks out of attempts after losing their worker", extra={"count": len(dead)})

    async def _maintain(self) -> None:
        while not self.stopping.is_set():
            try:
                await self._maintain_once()
            except Exception as exc:  # noqa: BLE001 - keep going through outages
                log.warning("maintenance pass failed", **_trouble(exc))
            try:
                # Also while PostgreSQL or Redis is away: this worker's loops still run and it
                # carries on once they are back; a restart would not bring them back sooner.
                self._beat()
            except OSError as exc:
                log.warning("heartbeat not written", extra={"reason": repr(exc)})
            try:
                await asyncio.wait_for(self.stopping.wait(), self.settings.maintenance_interval_seconds)
            except asyncio.TimeoutError:
                pass

    async def _measure_queue(self) -> None:
        """tasks_queued and tasks_oldest_queued_age_seconds, in total and per queue (a row
        without a queue counted in its kind's), from PostgreSQL every
        ``queue_metrics_interval_seconds`` (one query over the queued rows alone,
        ``TaskStore.queue_stats_by_queue``): a scrape reads what the last answer said. Not shown
        while PostgreSQL does not answer."""
        while not self.stopping.is_set():
            try:
                by_queue = {lane.name: (0, 0.0) for lane in self.lanes}
                total = (0, 0.0)
                for kind, queue_name, queued, oldest in await self.store.queue_stats_by_queue():
                    name = queue_name or kinds.queue_of(kind)
                    before = by_queue.get(name, (0, 0.0))
                    by_queue[name] = (before[0] + queued, max(before[1], oldest))
                    total = (total[0] + queued, max(total[1], oldest))
                metrics.QUEUE.set(*total)
                metrics.QUEUE.set_by_queue(by_queue)
            except Exception as exc:  # noqa: BLE001 - an outage: the maintenance loop says so
                metrics.QUEUE.clear()
                if not isinstance(exc, OUTAGES):
                    log.warning("queue metrics not refreshed", **_trouble(exc))
            try:
                await asyncio.wait_for(self.stopping.wait(), self.settings.queue_metrics_interval_seconds)
            except asyncio.TimeoutError:
                pass

    async def _keep_leases_while_finishing(self) -> None:
        """During the shutdown grace period the maintenance loop has stopped, but in-flight
        attempts still hold their tasks: without this their leases expire and another worker
        runs them a second time while they finish here."""
        while True:
            try:
                await self._renew_leases()
                self._beat()
            except Exception as exc:  # noqa: BLE001 - keep trying until the grace period ends
                log.warning("lease renewal during shutdown failed", **_trouble(exc))
            await asyncio.sleep(self.settings.maintenance_interval_seconds)

    # --- lifecycle ------------------------------------------------------------------------
    async def run(self) -> None:
        s = self.settings
        # With Vault: the credentials the keeper (started by the command, ``cli``) writes.
        credentials = (db_credentials.PoolCredentials(s.vault_state_dir, s.vault_credentials_poll_seconds)
                       if s.vault_enabled() else None)
        pool = limits.BoundedPool(await db_credentials.create_pool(s, self.secrets, credentials), None)
        metrics.watch_pool(pool)
        self.store = store.TaskStore(pool)
        self.schedules = schedules.ScheduleStore(pool)
        # Webhooks: a loop of its own beside the task slots (``webhook_dispatch`` says why a slow
        # receiver cannot slow the tasks).
        self.webhooks = webhook_dispatch.Dispatcher(webhook_store.WebhookStore(pool), self.config, s, OUTAGES)
        self.use_redis(queue.connect_for(s, self.secrets))
        await self._ensure_group()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.kind_runner.start)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        watch = asyncio.create_task(self.config.supervise())
        following = asyncio.create_task(credentials.follow()) if credentials else None
        report = ConfigReport(self.config, s.config_state_dir, "worker")
        reporting = report.start()
        log.info("worker started", extra={"consumer": self.consumer, "queues": {
            lane.name: self.config.config.concurrency_of(lane.name) for lane in self.lanes}})
        await asyncio.gather(self._consume(), self._maintain(), self._measure_queue(), self.webhooks.run(self.stopping))
        await asyncio.gather(self._shutdown(), self.webhooks.drain(s.shutdown_grace_seconds))
        watch.cancel()
        if following:
            following.cancel()
        reporting.cancel()
        report.remove()
        await self.redis.aclose()
        metrics.forget_pool(pool)
        await pool.close()
        self.stuck_threads = self.kind_runner.close()
        if self.stuck_threads:
            log.warning("task bodies still run in threads (timed out or handed back; a thread cannot be "
                        "stopped): exiting without waiting for them", extra={"threads": self.stuck_threads})

    async def _shutdown(self) -> None:
        """Tasks taken but not started go back at once; in-flight tasks finish within the grace
        period (their leases kept alive meanwhile); the rest is handed back."""
        not_started = self.lanes.backlog_size()
        await self._return_unstarted()
        if self.inflight:
            log.info("finishing in-flight tasks", extra={"count": len(self.inflight)})
            renewing = asyncio.create_task(self._keep_leases_while_finishing())
            try:
                await asyncio.wait(list(self.inflight), timeout=self.settings.shutdown_grace_seconds)
            finally:
                renewing.cancel()
                await asyncio.gather(renewing, return_exceptions=True)
        leftovers = [(t, c) for t, (_, c) in list(self.inflight.items())]
        for task, _ in leftovers:
            task.cancel()
        for _, claim in leftovers:
            if claim is not None:
                await self.store.hand_back(claim)  # not acked: reclaimed or reconciled later
        if leftovers:  # let the cancelled attempts unwind before the pools close under them
            await asyncio.wait([t for t, _ in leftovers], timeout=1)
        log.info("worker stopped", extra={"handed_back": len(leftovers), "not_started": not_started})

    async def _return_unstarted(self) -> None:
        """The backlog back on the streams: a read that was waiting when the worker was told to
        stop, or tasks recovered from PostgreSQL, would otherwise wait ``claim_idle_seconds``
        (pending under this consumer) or ``reconcile_after_seconds`` (a recovered row) before
        another worker took them, which would delay tasks every time a release drains a
        colour's workers. A message goes back on its own stream (a preview task stays with
        its colour), a recovered task on its queue's shared one, by its priority. Added again
        before the ack: a stop in between leaves a duplicate, which claims make harmless."""
        try:
            for lane in self.lanes:
                while len(lane):
                    message, task_id, priority = lane.peek()
                    await queue.enqueue(self.redis, task_id,
                                        message.stream if message else queue.stream_for(lane.name, priority))
                    await self._ack(message)
                    lane.pop()
        except Exception as exc:  # noqa: BLE001 - Redis away: they are reclaimed or reconciled later
            log.warning("tasks not started could not be put back on the stream", **_trouble(exc))


def _retrieve(body: asyncio.Task) -> None:
    """A body abandoned after a timeout may still fail later: fetch its exception so asyncio
    does not log it as never retrieved."""
    if not body.cancelled():
        body.exception()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def serve_metrics(port: int) -> None:
    if port:
        start_http_server(port, registry=metrics.exposed_registry(metrics.QUEUE))
