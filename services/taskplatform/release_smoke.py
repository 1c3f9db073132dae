"""`taskplatform smoke`: the release's smoke test, run by the deploy in the new colour's API
container before the router switches. One real task round trip through the router's preview
route (create → succeeded), served by an API of this process's colour and version and run by a
worker of the same: the new colour works end to end before any user reaches it.

It calls the API as integrators do, through the official Python client (``clients/python``,
import name ``shipyard_tasks``, installed in the image beside the platform): a release whose
client no longer speaks its own API fails here, before users meet it.

The token is minted here with the key set the API reads (``for_process``: its file, or Vault's
copy), short lived and scoped to ``tasks:read`` and ``tasks:write``; neither it nor the key is
ever printed. The task kind ``smoke`` is the platform's own (``taskplatform/smoke.py``): its
result names who ran it, ``{"colour", "version", "worker"}``."""

from __future__ import annotations

import time
import uuid

import httpx
from shipyard_tasks import ApiError, Client, RetryPolicy, ShipyardError, Task, TransportError, WaitTimeout

from taskplatform import auth, colours, scopes
from taskplatform.secrets import SecretError, SecretSource
from taskplatform.settings import ProcessSettings

SUBJECT = "shipyard-smoke"  # the tenant its tasks belong to
# The client's waits poll from 50 ms, doubling up to this: a finished smoke task is seen within
# 0.2 s, as before the client (a release waits on it).
POLL_CEILING_SECONDS = 0.2
REQUEST_TIMEOUT_SECONDS = 10.0  # one send; a smoke test with a shorter --timeout uses that
TOKEN_SPARE_SECONDS = 60  # the token outlives the smoke test by this, no more
# A fresh colour may refuse a request at first (503 overloaded while its pools fill): the client
# sends again when that cannot make the API act twice (its RetryPolicy), briefly: the whole round
# trip has --timeout seconds.
RETRY = RetryPolicy(attempts=3, base_seconds=0.2, max_backoff_seconds=1.0, max_retry_after_seconds=2.0)
SCOPES = (scopes.TASKS_READ, scopes.TASKS_WRITE)


class SmokeFailed(Exception):
    pass


def _named(name: str) -> str:
    """``green/0.2.0`` → ``green 0.2.0``, as a person reads it."""
    return name.replace("/", " ", 1)


def _release(name: str) -> dict[str, str]:
    colour, _, version = name.partition("/")
    return {"colour": colour, "version": version}


class _CreateWitness(httpx.BaseTransport):
    """The client's transport: httpx's own, keeping the status and ``X-Release`` of each answer
    to a create (the client returns the task, not the headers; which release answered is what a
    smoke test checks first)."""

    def __init__(self):
        self._inner = httpx.HTTPTransport()
        self.answers: list[tuple[int, str | None]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if request.method == "POST" and request.url.path.endswith("/v1/tasks"):
            self.answers.append((response.status_code, response.headers.get(colours.RELEASE_HEADER)))
        return response

    def close(self) -> None:
        self._inner.close()


class Smoke:
    def __init__(self, settings: ProcessSettings, secrets: SecretSource, base_url: str, timeout: float,
                 preview_header: bool = False):
        self.settings, self.secrets = settings, secrets
        self.base_url, self.timeout = base_url.rstrip("/"), timeout
        self.colour = settings.release_colour or "none"
        self.expected = colours.release_name(settings.release_colour, settings.build_version)
        # The edge's preview server sets it; a test calling the API directly must send it itself.
        self.headers = {colours.PREVIEW_HEADER: "1"} if preview_header else {}
        self.witness = _CreateWitness()
        self.report: dict = {"ok": False}

    def run(self) -> dict:
        """The report: ``ok`` and what was seen (``task_id``, ``seconds``, ``api``, ``worker``),
        or ``error``, what failed (naming the colour) and where to look."""
        started = time.monotonic()
        try:
            token = self._token()
            with Client(self.base_url, token, timeout=min(REQUEST_TIMEOUT_SECONDS, self.timeout), retry=RETRY,
                        transport=self.witness, headers=self.headers) as client:
                self._round_trip(client, started)
            self.report["ok"] = True
        except SmokeFailed as exc:
            self.report["error"] = str(exc)
        self.report["seconds"] = round(time.monotonic() - started, 3)
        return self.report

    def _token(self) -> str:
        """Signed with the key set's signing key, for the issuer and audience this API checks."""
        try:
            keys = auth.KeySet.parse(self.secrets.get(auth.SECRET_NAME))
        except (SecretError, auth.KeySetError) as exc:  # their messages never quote the key
            raise SmokeFailed(f"no token: {exc}") from None
        return keys.issue(SUBJECT, self.settings.jwt_issuer, self.settings.jwt_audience,
                          self.timeout + TOKEN_SPARE_SECONDS, SCOPES)

    def _round_trip(self, client: Client, started: float) -> None:
        task = self._create(client)
        self.report["task_id"] = task.id
        remaining = max(0.0, started + self.timeout - time.monotonic())
        try:
            task = client.wait_for_task(task.id, timeout=remaining, poll_ceiling=POLL_CEILING_SECONDS)
        except WaitTimeout as exc:
            raise SmokeFailed(self._unfinished(exc.task)) from None
        except ShipyardError as exc:  # its text names the URL and the API's code, never a header
            raise SmokeFailed(f"reading task {task.id} failed: {str(exc)[:300]}") from None
        if task.status != "succeeded":
            raise SmokeFailed(f"task {task.status} after attempt {task.attempts}: {task.error}")
        runner = task.result if isinstance(task.result, dict) else {}
        self.report["worker"] = runner
        ran_by = colours.release_name(runner.get("colour", ""), runner.get("version", "?"))
        if ran_by != self.expected:
            raise SmokeFailed(f"task run by {_named(ran_by)} (worker {runner.get('worker')}), expected "
                              f"{_named(self.expected)}: recreate worker-{self.colour} with the new version")

    def _create(self, client: Client) -> Task:
        """The smoke task, created by an API of this release (else SmokeFailed saying who answered)."""
        try:
            task = client.create_task("smoke", {}, idempotency_key=f"smoke-{uuid.uuid4().hex}")
        except ApiError as exc:
            self._check_served()
            raise SmokeFailed(f"create answered {exc.status}: {exc.code}: {exc.message}") from None
        except TransportError as exc:  # no answer at all: the preview route or the colour's API is down
            raise SmokeFailed(f"create got no answer: {str(exc)[:300]} (is api-{self.colour} running and the "
                              f"router's preview route up?)") from None
        except ShipyardError as exc:  # a success that is not the API's (a proxy's page)
            self._check_served()
            raise SmokeFailed(f"create: {str(exc)[:300]}") from None
        self._check_served()
        return task

    def _check_served(self) -> None:
        """The last answer to the create came from this release (``X-Release``)."""
        if not self.witness.answers:
            return
        status, served = self.witness.answers[-1]
        if served is None:
            raise SmokeFailed(f"create answered {status} without {colours.RELEASE_HEADER}: no task API answered at "
                              f"{self.base_url} (is api-{self.colour} running and the router's preview route up?)")
        self.report["api"] = _release(served)
        if served != self.expected:
            raise SmokeFailed(f"create served by {_named(served)}, expected {_named(self.expected)}: "
                              f"the preview route does not reach api-{self.colour}")

    def _unfinished(self, task: Task) -> str:
        said = f"task still {task.status} after {self.timeout:g} s"
        if task.status == "queued":
            return f"{said}: no worker of colour {self.colour} took it (is worker-{self.colour} running?)"
        if task.error:
            return f"{said}, attempt {task.attempts} failed: {task.error}"
        return said
