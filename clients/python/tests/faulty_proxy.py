"""An HTTP proxy on loopback in front of the real API that plays, on the next requests it gets,
the faults a client meets on the way: an answer the API did not give (a 503 of a load balancer,
a 429 with Retry-After), a connection closed before the request reached the API, or one closed
after the API acted on it but before its answer came back (the case idempotency keys are for).
Every request it saw is recorded, so a test counts the client's sends."""

from __future__ import annotations

import http.client
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Answer:
    """Answer this instead of forwarding (the API never sees the request)."""
    status: int
    body: dict | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DropBefore:
    """Close the connection without forwarding: the API never sees the request."""


@dataclass(frozen=True)
class DropAfter:
    """Forward, let the API answer, then close the connection without passing the answer on."""


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    forwarded: bool


class FaultyProxy:
    def __init__(self, upstream: str):
        target = urlsplit(upstream)
        self.upstream = (target.hostname, target.port)
        self.faults: list[Answer | DropBefore | DropAfter] = []
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="faulty-proxy", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultyProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def inject(self, *faults: Answer | DropBefore | DropAfter) -> None:
        """The next requests meet these faults, one each, in order; later ones pass through."""
        with self._lock:
            self.faults.extend(faults)

    def sends(self, method: str, path_prefix: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path.startswith(path_prefix)]

    def _next_fault(self):
        with self._lock:
            return self.faults.pop(0) if self.faults else None

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like a real load balancer: httpx reuses connections

            def log_message(self, *args):  # the test's output is for failures
                pass

            def _relay(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._next_fault()
                proxy.seen.append(Seen(self.command, self.path, dict(self.headers),
                                       forwarded=not isinstance(fault, (Answer, DropBefore))))
                if isinstance(fault, DropBefore):
                    self.close_connection = True
                    return
                if isinstance(fault, Answer):
                    payload = json.dumps(fault.body).encode() if fault.body is not None else b"<html>bad gateway</html>"
                    self.send_response(fault.status)
                    for name, value in fault.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.send_header("Content-Type", "application/json" if fault.body is not None else "text/html")
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "host")}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    content = answer.read()
                finally:
                    upstream.close()
                if isinstance(fault, DropAfter):
                    self.close_connection = True
                    return
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding", "content-length", "date", "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_DELETE = _relay

        return Handler
