"""Runtime config from Consul KV: the ``ConsulConfigSource``, beside the file source.

One JSON document at one key (``shipyard/<env>/shared/runtime``), read with this service's own
ACL token and watched with blocking queries: ``index`` + ``wait``, so a pushed change arrives
within one round trip and an idle watch costs one request per ``wait``. Per Consul's rules for
blocking queries, an index that goes backwards (a restored snapshot, a new leader's raft
index) resets the watch to 0, and errors back off with jitter so a fleet of instances does not
retry in step.

Consul down or partitioned: the instance keeps the last good config, retries, and reports
itself ``stale`` (since when, why) — nothing else changes: readiness does not depend on it and
no request fails because of it. The last good document is cached on disk (written atomically
after each applied version), so a restart during the outage starts with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

import consul
import requests

from taskplatform.runtime_config import ConfigSource

log = logging.getLogger("taskplatform.config")


@dataclass(frozen=True)
class ConsulEndpoint:
    host: str
    port: int


def parse_endpoints(text: str) -> list[ConsulEndpoint]:
    """``host:port,host:port`` (a port may be left out: 8500)."""
    endpoints = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        host, _, port = part.partition(":")
        endpoints.append(ConsulEndpoint(host, int(port or 8500)))
    if not endpoints:
        raise ValueError("no Consul address given")
    return endpoints


class ConsulUnavailable(Exception):
    """No Consul server answered the read (down, partitioned, or refused our token)."""


class ConsulConfigSource(ConfigSource):
    def __init__(self, endpoints: list[ConsulEndpoint], key: str, token_file: str | Path, cache_path: str | Path,
                 wait_seconds: float = 30.0, backoff_base: float = 0.5, backoff_max: float = 10.0):
        super().__init__()
        self.endpoints, self.key = endpoints, key
        self.token_file, self.cache_path = Path(token_file), Path(cache_path)
        self.wait_seconds, self.backoff_base, self.backoff_max = wait_seconds, backoff_base, backoff_max
        self.index = 0  # Consul's X-Consul-Index of the last answer (0: not watching yet)
        self._endpoint = 0
        self._clients: dict[ConsulEndpoint, consul.Consul] = {}

    # -- reading ----------------------------------------------------------------------------

    def _token(self) -> str:
        # Read at each request: a rotated token file is used without a restart.
        return self.token_file.read_text().strip()

    def _client(self, endpoint: ConsulEndpoint) -> consul.Consul:
        # One client per server, kept: its connection stays open between reads, so re-arming the
        # watch right after a change costs no new TCP connection and session, work that would
        # compete for the CPU with the other instances still applying the same change.
        client = self._clients.get(endpoint)
        if client is None:
            client = self._clients[endpoint] = consul.Consul(host=endpoint.host, port=endpoint.port)
            client.http.connections_timeout = 5
            # Consul is reached directly on the project network: a proxy from the environment
            # (HTTP_PROXY, .netrc) has no place in a blocking query's path (a proxy cuts long
            # polls), and looking them up at each read was about a fifth of the client's CPU for it.
            client.http.session.trust_env = False
        return client

    def _drop_client(self, endpoint: ConsulEndpoint) -> None:
        # After an error the connection may be half dead (a server restarted, a partition): the
        # next read to this server starts on a new one.
        client = self._clients.pop(endpoint, None)
        if client is not None:
            client.http.session.close()

    def _get(self, endpoint: ConsulEndpoint, blocking: dict) -> tuple[int, dict | None]:
        """One read from one server. A kept connection the server closed just as the request went
        out (an idle timeout, a restart) fails with a connection error: the read is sent once
        more on a new one, so that race is not reported as Consul being away. A timeout is not
        retried (a partitioned server would cost two)."""
        while True:
            reused = endpoint in self._clients
            try:
                return self._client(endpoint).kv.get(self.key, token=self._token(), **blocking)
            except (requests.RequestException, consul.ConsulException) as exc:
                self._drop_client(endpoint)
                if not (reused and isinstance(exc, requests.ConnectionError)):
                    raise  # the second try is on a new connection: not reused, so it stops here

    def _read(self, index: int, wait_seconds: float | None) -> tuple[int, bytes | None]:
        """(index, document or None when the key is absent) from the first server that answers."""
        errors = []
        for attempt in range(len(self.endpoints)):
            endpoint = self.endpoints[(self._endpoint + attempt) % len(self.endpoints)]
            # No wait: a plain read (an index alone would block for Consul's default 5 min).
            # After a failed server, the others get a plain read: a partitioned server costs
            # one blocking timeout, not one per server.
            blocking = dict(index=index, wait=f"{max(1, int(wait_seconds))}s") \
                if index and wait_seconds and not errors else {}
            try:
                new_index, item = self._get(endpoint, blocking)
            except (requests.RequestException, consul.ConsulException) as exc:
                errors.append(f"{endpoint.host}:{endpoint.port}: {type(exc).__name__}: {exc}")
                continue
            self._endpoint = (self._endpoint + attempt) % len(self.endpoints)
            return int(new_index), (item["Value"] if item else None)
        self._endpoint = (self._endpoint + 1) % len(self.endpoints)
        raise ConsulUnavailable("; ".join(errors))

    # -- the ConfigSource interface ---------------------------------------------------------

    def load_initial(self) -> None:
        try:
            index, raw = self._read(0, None)
            self.source_read()
        except ConsulUnavailable as exc:
            self.source_failed(exc)
            raw, index = None, 0
        if raw is not None and self.offer(raw, f"consul:{self.key}"):
            self.index = index
            self._write_cache(raw)
            return
        cached = self._read_cache()
        if cached is not None and self.offer(cached, f"cache:{self.cache_path}"):
            # Started on the last good config; the watch takes over from Consul when it answers.
            if self._failing_since is None:
                self.source_failed(ConsulUnavailable(f"Consul key {self.key} holds no valid config; started from the cache"))
            log.warning("runtime config from the cache: Consul did not give a valid one", extra={
                "key": self.key, "cache": str(self.cache_path), "version": self.config.version})
            return
        raise RuntimeError(f"no valid runtime config: Consul key {self.key} "
                           f"({self._last_error or 'absent or invalid'}) and no cache at {self.cache_path}")

    def poll_once(self, wait_seconds: float | None = None) -> None:
        """One (blocking) read; offers a changed document. Raises ConsulUnavailable."""
        new_index, raw = self._read(self.index, wait_seconds if wait_seconds is not None else self.wait_seconds)
        if new_index < self.index:
            # Consul's rule: an index that goes backwards means the watch starts over.
            log.warning("Consul index went backwards; watching from the start", extra={
                "key": self.key, "was": self.index, "now": new_index})
            self.index = 0
            return
        changed = new_index != self.index
        self.index = max(new_index, 1)  # an index of 0 would turn the next read non-blocking
        self.source_read()
        if changed and raw is not None and self.offer(raw, f"consul:{self.key}@{new_index}"):
            self._write_cache(raw)

    async def watch(self) -> None:
        # Retries by itself, with jitter (``supervise`` is for what this loop does not expect):
        # an outage is the normal case here, logged once when it begins (source_failed).
        while True:
            try:
                await asyncio.to_thread(self.poll_once)
            except ConsulUnavailable as exc:
                if self._failing_since is None:
                    log.warning("Consul unreachable; keeping the last good runtime config", extra={
                        "key": self.key, "reason": str(exc),
                        "kept_version": self._current.config.version if self._current else None})
                self.source_failed(exc)
                await asyncio.sleep(self._backoff())

    def state(self) -> dict:
        """Where the config comes from and how current it is (with ``reload_state``)."""
        return {"source": "consul", "key": self.key, "index": self.index, **self.reload_state()}

    def _backoff(self) -> float:
        # Full jitter: instances that lost Consul together do not come back in step.
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** min(self._failures, 10)))

    def _write_cache(self, raw: bytes) -> None:
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_path.with_name(f".{self.cache_path.name}.{os.getpid()}")
            tmp.write_bytes(raw)
            os.replace(tmp, self.cache_path)  # a crash leaves the old cache or the new, never half
        except OSError as exc:
            log.warning("runtime config cache not written", extra={"path": str(self.cache_path), "reason": exc.strerror})

    def _read_cache(self) -> bytes | None:
        try:
            return self.cache_path.read_bytes()
        except OSError:
            return None
