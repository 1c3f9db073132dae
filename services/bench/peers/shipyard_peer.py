"""Shipyard as a client sees it: ``POST /v1/tasks`` over HTTP/1.1 keep-alive with a bearer
token (the standard library's client: the cheapest a Python client gets), and the outcomes from
the platform's own rows in PostgreSQL (``updated_at`` is set with ``clock_timestamp()`` when a
task succeeds). Its workers are the platform's, started by the bench itself (``servers.py``).

Environment: SHIPYARD_API_URL, SHIPYARD_TOKEN, SHIPYARD_PG_DSN (a libpq connection string).
"""

from __future__ import annotations

import http.client
import json
import os
from urllib.parse import urlsplit

from peers.result_rows import ReadsResultRows, ResultRows


class Adapter(ReadsResultRows):
    def __init__(self):
        self.api = urlsplit(os.environ["SHIPYARD_API_URL"])
        self.headers = {"Authorization": f"Bearer {os.environ['SHIPYARD_TOKEN']}", "Content-Type": "application/json"}
        self.http: http.client.HTTPConnection | None = None
        self.rows = ResultRows(os.environ["SHIPYARD_PG_DSN"], table="tasks", task_id="id::text",
                               ids_param="%s::uuid[]", status="status", done_at="updated_at", runs="attempts",
                               checksum_succeeded="kind = 'checksum' AND status = 'succeeded'",
                               states={"succeeded": "succeeded", "dead": "failed", "cancelled": "failed"})

    def prepare(self) -> dict:
        return {"settings": "", "versions": {}}  # the bench starts and describes the platform

    def run_worker(self, name: str) -> None:
        raise SystemExit("shipyard's workers are the platform's own (`taskplatform worker`), started by the bench")

    def connect(self) -> None:
        self.http = http.client.HTTPConnection(self.api.hostname, self.api.port, timeout=30)
        self.http.connect()  # now, not on the first create's clock

    def _create(self, kind: str, payload: dict) -> str:
        body = json.dumps({"kind": kind, "payload": payload})
        try:
            self.http.request("POST", "/v1/tasks", body, self.headers)
            answer = self.http.getresponse()
        except (http.client.HTTPException, ConnectionError):
            self.connect()  # the server closed the keep-alive connection: once more on a new one
            self.http.request("POST", "/v1/tasks", body, self.headers)
            answer = self.http.getresponse()
        text = answer.read()
        if answer.status != 202:
            raise RuntimeError(f"POST /v1/tasks answered {answer.status}: {text[:200]!r}")
        return json.loads(text)["id"]

    def submit(self, index: int) -> str:
        return self._create("checksum", {"n": index})

    def submit_slow(self, index: int, seconds: float, marker_file: str) -> str:
        return self._create("sleep", {"seconds": seconds})  # the platform's own kind: it marks nothing
