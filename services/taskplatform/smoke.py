"""`taskplatform smoke`: the release's smoke test, run by the deploy in the new colour's API
container before the edge switches. One real task round trip through the edge's preview route
(create → succeeded), served by an API of this process's colour and version and run by a worker
of the same: the new colour works end to end before any user reaches it.

The token is minted here with the container's own key set (it has ``jwt_signing_key``), short
lived; neither it nor the key is ever printed.

The task kind ``smoke`` it creates is the platform's own (declared here, loaded whatever
TASKS_KINDS_PACKAGES says): its result names who ran it, ``{"colour", "version", "worker"}``."""

from __future__ import annotations

import time

import requests
from pydantic import BaseModel, ConfigDict

from taskplatform import auth, colours
from taskplatform.kinds import TaskContext, kind
from taskplatform.secrets import SecretError, SecretSource
from taskplatform.settings import ProcessSettings

SUBJECT = "shipyard-smoke"  # the tenant its tasks belong to
POLL_SECONDS = 0.2
REQUEST_TIMEOUT_SECONDS = 10.0
TOKEN_SPARE_SECONDS = 60  # the token outlives the smoke test by this, no more


class SmokeFailed(Exception):
    pass


class SmokePayload(BaseModel):
    """Nothing: a smoke task only says who ran it."""
    model_config = ConfigDict(extra="forbid", strict=True)


@kind("smoke", payload=SmokePayload)
async def run_smoke(payload: SmokePayload, context: TaskContext) -> dict:
    """The release's smoke test: which colour, version and worker took it."""
    return dict(context.runner)


def _named(name: str) -> str:
    """``green/0.2.0`` → ``green 0.2.0``, as a person reads it."""
    return name.replace("/", " ", 1)


def _release(name: str) -> dict[str, str]:
    colour, _, version = name.partition("/")
    return {"colour": colour, "version": version}


class Smoke:
    def __init__(self, settings: ProcessSettings, secrets: SecretSource, base_url: str, timeout: float,
                 preview_header: bool = False):
        self.settings, self.secrets = settings, secrets
        self.base_url, self.timeout = base_url.rstrip("/"), timeout
        self.colour = settings.release_colour
        self.expected = colours.release_name(settings.release_colour, settings.build_version)
        self.session = requests.Session()
        if preview_header:  # the edge's preview server sets it; a test calling the API directly must
            self.session.headers[colours.PREVIEW_HEADER] = "1"
        self.report: dict = {"ok": False}

    def run(self) -> dict:
        """The report: ``ok`` and what was seen (``task_id``, ``seconds``, ``api``, ``worker``),
        or ``error``, what failed."""
        started = time.monotonic()
        try:
            self.session.headers["Authorization"] = f"Bearer {self._token()}"
            self._round_trip(started + self.timeout)
            self.report["ok"] = True
        except SmokeFailed as exc:
            self.report["error"] = str(exc)
        finally:
            self.session.close()
        self.report["seconds"] = round(time.monotonic() - started, 3)
        return self.report

    def _token(self) -> str:
        """Signed with the key set's signing key, for the issuer and audience this API checks."""
        try:
            keys = auth.KeySet.parse(self.secrets.get(auth.SECRET_NAME))
        except (SecretError, auth.KeySetError) as exc:  # their messages never quote the key
            raise SmokeFailed(f"no token: {exc}") from None
        return keys.issue(SUBJECT, self.settings.jwt_issuer, self.settings.jwt_audience,
                          self.timeout + TOKEN_SPARE_SECONDS)

    def _round_trip(self, deadline: float) -> None:
        created = self._request("post", "/v1/tasks", deadline, json={"kind": "smoke", "payload": {}})
        served = created.headers.get(colours.RELEASE_HEADER)
        if served is None:
            raise SmokeFailed(f"create answered {created.status_code} without {colours.RELEASE_HEADER}: "
                              f"no task API answered at {self.base_url}")
        self.report["api"] = _release(served)
        if served != self.expected:
            raise SmokeFailed(f"create served by {_named(served)}, expected {_named(self.expected)}")
        if created.status_code != 202:
            raise SmokeFailed(f"create answered {created.status_code}: {_error_of(created)}")
        task_id = created.json()["id"]
        self.report["task_id"] = task_id
        while True:
            answer = self._request("get", f"/v1/tasks/{task_id}", deadline)
            if answer.status_code != 200:
                raise SmokeFailed(f"reading the task answered {answer.status_code}: {_error_of(answer)}")
            task = answer.json()
            if task["status"] == "succeeded":
                break
            if task["status"] in ("retry_wait", "dead", "cancelled"):
                raise SmokeFailed(f"task {task['status']} after attempt {task['attempts']}: {task['error']}")
            if time.monotonic() >= deadline:
                if task["status"] == "queued":
                    raise SmokeFailed(f"task still queued after {self.timeout:g} s: no worker of colour "
                                      f"{self.colour or 'none'} took it")
                raise SmokeFailed(f"task still {task['status']} after {self.timeout:g} s")
            time.sleep(POLL_SECONDS)
        runner = task["result"]
        self.report["worker"] = runner
        ran_by = colours.release_name(runner.get("colour", ""), runner.get("version", "?"))
        if ran_by != self.expected:
            raise SmokeFailed(f"task run by {_named(ran_by)} (worker {runner.get('worker')}), "
                              f"expected {_named(self.expected)}")

    def _request(self, method: str, path: str, deadline: float, **kwargs) -> requests.Response:
        wait = min(REQUEST_TIMEOUT_SECONDS, max(1.0, deadline - time.monotonic()))
        try:
            return self.session.request(method, f"{self.base_url}{path}", timeout=wait, **kwargs)
        except requests.RequestException as exc:  # its text names the URL, never a header
            raise SmokeFailed(f"{method.upper()} {self.base_url}{path} failed: {exc.__class__.__name__}: "
                              f"{str(exc)[:300]}") from None


def _error_of(response: requests.Response) -> str:
    """The API's error ``code: message``, else the start of whatever answered."""
    try:
        body = response.json()
        return f"{body['code']}: {body['message']}"
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
