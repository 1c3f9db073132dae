"""The Consul config source against a real Consul (ACLs on, default deny): a pushed document is
applied within one blocking round trip, a bad one rejected while the old stays, an outage keeps
the last good config (and a restart during it starts from the disk cache), and the instance
reports itself stale until Consul answers again. The watch keeps its connection between reads,
still reads the token file at each one, and replaces a connection the server dropped."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest

from taskplatform.consul_config import ConsulConfigSource, ConsulEndpoint, ConsulUnavailable
from taskplatform_testing.servers import RUNTIME_DEFAULTS

KEY = "shipyard/test/shared/runtime"


def doc(**overrides) -> bytes:
    return json.dumps(dict(RUNTIME_DEFAULTS, **overrides)).encode()


@pytest.fixture
def source(consul_server, tmp_path):
    token = tmp_path / "consul_token"
    token.write_text(consul_server.reader_token("shipyard/test/shared/") + "\n")
    consul_server.put(KEY, doc(version="1"))
    return ConsulConfigSource([ConsulEndpoint("127.0.0.1", consul_server.http_port)], KEY, token,
                              tmp_path / "cache" / "runtime.json", wait_seconds=5, backoff_base=0.05, backoff_max=0.2)


def test_a_pushed_document_is_applied_by_the_blocking_watch(consul_server, source):
    source.load_initial()
    assert source.config.version == "1" and source.state()["watch"]["state"] == "ok"
    applied = []
    source.subscribe(lambda loaded: applied.append(loaded.config.version))
    waiter = threading.Thread(target=source.poll_once)  # blocks until the key changes
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive()  # really blocking: nothing changed yet
    consul_server.put(KEY, doc(version="2", worker_concurrency=9))
    waiter.join(10)
    assert not waiter.is_alive() and applied == ["2"] and source.config.worker_concurrency == 9
    assert json.loads(source.cache_path.read_bytes())["version"] == "2"


def test_an_invalid_document_is_rejected_and_the_old_one_stays(consul_server, source):
    source.load_initial()
    rejected = []
    source.on_reject = lambda: rejected.append(True)
    consul_server.put(KEY, doc(version="bad", worker_concurrency=0))
    source.poll_once(wait_seconds=0)
    assert rejected and source.config.version == "1"
    assert json.loads(source.cache_path.read_bytes())["version"] == "1"  # the cache keeps the good one


def test_the_token_reads_its_prefix_only(consul_server, source):
    consul_server.put("shipyard/test/api/secret-ish", b"x")
    elsewhere = ConsulConfigSource(source.endpoints, "shipyard/test/api/secret-ish", source.token_file,
                                   source.cache_path)
    with pytest.raises(RuntimeError, match="no valid runtime config"):
        elsewhere.load_initial()
    assert "ACLPermissionDenied" in elsewhere.state()["watch"]["last_error"]


def test_consul_down_keeps_the_last_good_config_and_a_restart_starts_from_the_cache(consul_server, source, tmp_path):
    source.load_initial()
    dead = ConsulEndpoint("127.0.0.1", 1)  # nothing listens there: an unreachable server
    source.endpoints = [dead]
    with pytest.raises(ConsulUnavailable):
        source.poll_once(wait_seconds=0)
    # The watch loop marks it stale and keeps serving the config it has.
    loop_task_ran = asyncio.run(_run_watch_briefly(source))
    assert loop_task_ran and source.config.version == "1"
    assert source.state()["watch"]["failing_since"] is not None and "127.0.0.1:1" in source.state()["watch"]["last_error"]
    # A restart during the outage: the cache on disk is the config.
    restarted = ConsulConfigSource([dead], KEY, source.token_file, source.cache_path)
    restarted.load_initial()
    assert restarted.config.version == "1" and restarted.state()["watch"]["state"] == "failing"
    # Consul answers again: the next read clears the stale state.
    restarted.endpoints = [ConsulEndpoint("127.0.0.1", consul_server.http_port)]
    restarted.poll_once(wait_seconds=0)
    assert restarted.state()["watch"]["state"] == "ok" and restarted.config.version == "1"


async def _run_watch_briefly(source) -> bool:
    task = asyncio.create_task(source.watch())
    deadline = time.monotonic() + 5
    while source.state()["watch"]["failing_since"] is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    task.cancel()
    return source.state()["watch"]["failing_since"] is not None


def test_an_index_that_goes_backwards_restarts_the_watch(consul_server, source):
    source.load_initial()
    source.index = 10**9  # as if Consul's index went back (a restored snapshot)
    source.poll_once(wait_seconds=1)  # Consul answers after the wait with its (lower) index
    assert source.index == 0
    consul_server.put(KEY, doc(version="3"))
    source.poll_once(wait_seconds=1)
    assert source.config.version == "3" and source.index > 0


class Relay:
    """A TCP relay in front of Consul: counts the connections it was given and can cut them all
    (what a server restart or an idle timeout does to a kept connection)."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.open: list[socket.socket] = []
        self.drop_next_request = False  # the next request on a kept connection gets no answer
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.accepted += 1
            self.open += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool = False) -> None:
        try:
            requests_seen = 0
            while data := src.recv(65536):
                requests_seen += from_client
                if from_client and requests_seen > 1 and self.drop_next_request:
                    # The server closes the kept connection as the request arrives.
                    self.drop_next_request = False
                    for sock in (src, dst):
                        sock.shutdown(socket.SHUT_RDWR)
                    return
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # cut

    def cut(self) -> None:
        for sock in self.open:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self.open = []

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture
def relay(consul_server):
    relay = Relay(consul_server.http_port)
    yield relay
    relay.close()


def test_the_watch_keeps_its_connection_and_replaces_one_the_server_dropped(consul_server, source, relay):
    source.endpoints = [ConsulEndpoint("127.0.0.1", relay.port)]
    source.load_initial()
    consul_server.put(KEY, doc(version="2"))
    source.poll_once(wait_seconds=0)
    source.poll_once(wait_seconds=0)
    assert source.config.version == "2" and relay.accepted == 1  # re-reading opened no new connection
    relay.cut()
    consul_server.put(KEY, doc(version="3"))
    source.poll_once(wait_seconds=0)
    assert source.config.version == "3" and source.state()["watch"]["state"] == "ok" and relay.accepted == 2


def test_a_kept_connection_closed_as_a_request_goes_out_is_retried_once_on_a_new_one(consul_server, source, relay):
    source.endpoints = [ConsulEndpoint("127.0.0.1", relay.port)]
    source.load_initial()
    consul_server.put(KEY, doc(version="2"))
    relay.drop_next_request = True
    source.poll_once(wait_seconds=0)
    assert source.config.version == "2" and relay.accepted == 2 and not relay.drop_next_request
    assert source.state()["watch"]["state"] == "ok"


def test_a_kept_connection_still_reads_the_token_file_at_each_request(consul_server, source, relay):
    source.endpoints = [ConsulEndpoint("127.0.0.1", relay.port)]
    source.load_initial()
    good = source.token_file.read_text()
    source.token_file.write_text(consul_server.reader_token("shipyard/other/") + "\n")  # rotated, wrong prefix
    with pytest.raises(ConsulUnavailable, match="ACLPermissionDenied"):
        source.poll_once(wait_seconds=0)
    source.token_file.write_text(good)
    consul_server.put(KEY, doc(version="2"))
    source.poll_once(wait_seconds=0)
    assert source.config.version == "2"


def test_the_watch_goes_to_consul_directly_whatever_proxy_the_environment_names(consul_server, source, monkeypatch):
    consul_server.put(KEY, doc(version="2"))
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")  # nothing listens there
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:1")
    source.load_initial()
    assert source.config.version == "2" and source.state()["watch"]["state"] == "ok"
