"""The create fast path (``taskplatform.fast_create``) answers as the FastAPI route does: the
same status, headers and body, the same access-log line and the same metrics, for a create and
for each way one is refused. Each case is sent twice to one app, in-process on the suite's
PostgreSQL and Redis: as the fast path takes it (``Content-Type: application/json``) and as it
hands it to the route (``application/json; charset=utf-8``, which FastAPI reads alike), with the
same X-Request-ID. Which of the two served is read from the ASGI scope: only FastAPI's router
sets ``endpoint`` in it."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import httpx
import pytest
from fastapi.security.utils import get_authorization_scheme_param

from taskplatform import deps, fast_create, metrics
from taskplatform.api import create_app
from taskplatform.scopes import TASKS_READ
from taskplatform.settings import ProcessSettings
from taskplatform_testing.servers import write_config

FAST, ROUTED = "application/json", "application/json; charset=utf-8"
# What differs between two creates by nature: the task's own id and times.
VOLATILE = {"id", "created_at", "updated_at", "queued_at", "run_at"}


@pytest.fixture
def in_process(platform, tmp_path, monkeypatch):
    """(the API's ASGI app, a spy on it saying which path served each request): the app with
    the runtime config ``overrides`` given to the returned function, its services started."""
    for name, value in platform.env().items():
        if name.startswith("TASKS_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("TASKS_CONFIG_FILE", str(tmp_path / "runtime.json"))

    def build(**overrides):
        write_config(tmp_path / "runtime.json", **overrides)
        app = create_app(ProcessSettings())
        routed: list[bool] = []

        async def spy(scope, receive, send):
            await app(scope, receive, send)
            routed.append("endpoint" in scope)

        return app, spy, routed

    return build


def exchange(app, spy, tenant: str, requests: list[tuple[str, dict, dict]]) -> list[httpx.Response]:
    """Each (token, body, headers) POSTed to /v1/tasks in turn, the app's services open
    meanwhile. The tasks it made (``tenant``'s) are cancelled before it returns: they are on the
    suite's streams, and a worker another test starts must not run them (that test counts what
    its worker ran)."""
    async def scenario():
        services = app.app.app.state.services
        await services.start()
        answers = []
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=spy), base_url="http://api") as client:
                for token, body, headers in requests:
                    answers.append(await client.post("/v1/tasks", content=json.dumps(body).encode(),
                                                     headers={"Authorization": f"Bearer {token}", **headers}))
            return answers
        finally:
            for answer in answers:
                if answer.status_code == 202:
                    await services.store.cancel(tenant, uuid.UUID(answer.json()["id"]))
            await services.stop()

    return asyncio.run(scenario())


def access_lines(records) -> list[dict]:
    fields = ("request_id", "tenant", "credential", "route", "method", "status")
    return [{name: getattr(r, name, None) for name in fields} | {"task_id": hasattr(r, "task_id")}
            for r in records if r.getMessage() == "request"]


def counts() -> dict[tuple, float]:
    """Every sample of the request and created-task counters, by name and labels."""
    return {(sample.name, *sorted(sample.labels.items())): sample.value
            for counter in (metrics.REQUESTS, metrics.TASKS_CREATED) for family in counter.collect()
            for sample in family.samples if sample.name.endswith("_total")}


def grown(before: dict, after: dict) -> dict:
    return {key: value - before.get(key, 0) for key, value in after.items() if value != before.get(key, 0)}


def same_answer(fast: httpx.Response, routed: httpx.Response) -> None:
    assert fast.status_code == routed.status_code
    if fast.status_code == 202:  # two tasks: all but their ids and times the same
        assert {k: v for k, v in fast.json().items() if k not in VOLATILE} == \
               {k: v for k, v in routed.json().items() if k not in VOLATILE}
        assert len(fast.content) == int(fast.headers["content-length"])
        drop = {"content-length"}
    else:
        assert fast.content == routed.content
        drop = set()
    assert [(k, v) for k, v in fast.headers.raw if k.decode() not in drop] == \
           [(k, v) for k, v in routed.headers.raw if k.decode() not in drop]


CASES = {
    # name: (token kind, body, runtime config, status)
    "created": ("ok", {"kind": "checksum", "payload": {"n": 1}}, {}, 202),
    "bad key": ("bad", {"kind": "checksum", "payload": {}}, {}, 401),
    "missing scope": ("read-only", {"kind": "checksum", "payload": {}}, {}, 403),
    "unknown kind": ("ok", {"kind": "no-such-kind", "payload": {}}, {}, 422),
    "invalid payload": ("ok", {"kind": "sleep", "payload": {"seconds": "1"}}, {}, 422),
    "over the rate limit": ("ok", {"kind": "checksum", "payload": {}}, {"rate_limit_per_minute": 1}, 429),
    "kind disabled": ("ok", {"kind": "checksum", "payload": {}}, {"enabled_kinds": ["sleep"]}, 409),
    "maintenance": ("ok", {"kind": "checksum", "payload": {}}, {"maintenance": True}, 503),
}
# The fast path takes a request whose body is valid; the others it hands on to the route. In
# maintenance the gate around both refuses before either.
FAST_PATH_TAKES = {"created", "bad key", "missing scope", "over the rate limit", "kind disabled"}
GATED = {"maintenance"}


@pytest.mark.parametrize("case", CASES)
def test_the_fast_path_answers_logs_and_counts_as_the_route(case, in_process, platform, caplog, monkeypatch):
    token_kind, body, config, status = CASES[case]
    tenant = f"fast-{case.replace(' ', '-')}"
    token = {"ok": platform.token(tenant), "bad": "not-a-token",
             "read-only": platform.token(tenant, scopes=(TASKS_READ,))}[token_kind]
    # One second for both: a 429's Retry-After counts the seconds left of the minute.
    monkeypatch.setattr(deps.time, "time", lambda now=deps.time.time(): now)
    app, spy, routed = in_process(**config)
    # Over the rate limit: the minute's one request taken first.
    first = [(token, {"kind": "checksum"}, {"Content-Type": FAST})] if status == 429 else []
    with caplog.at_level(logging.INFO, logger="taskplatform.api"):
        before = counts()
        *_, fast, by_route = exchange(app, spy, tenant, first + [
            (token, body, {"Content-Type": kind, "X-Request-ID": f"req-{case}"}) for kind in (FAST, ROUTED)])
        after = counts()
    assert fast.status_code == status, fast.text
    assert routed[-2:] == ([False, False] if case in GATED else [case not in FAST_PATH_TAKES, True])
    same_answer(fast, by_route)
    fast_line, routed_line = access_lines(caplog.records)[-2:]
    assert fast_line == routed_line and fast_line["request_id"] == f"req-{case}"
    # Both requests counted alike: twice under their route and status, and twice created or never.
    route = fast_line["route"]
    expected = {("http_requests_total", ("route", route), ("status", str(status))): 2}
    if status == 202:
        expected[("tasks_created_total", ("kind", "checksum"))] = 2
    assert grown(before, after) == expected | ({("http_requests_total", ("route", "/v1/tasks"), ("status", "202")): 1,
                                               ("tasks_created_total", ("kind", "checksum")): 1} if first else {})


def test_an_idempotency_key_or_a_callback_goes_to_the_route(in_process, platform):
    app, spy, routed = in_process()
    token = platform.token("fast-handed-on")
    answers = exchange(app, spy, "fast-handed-on", [
        (token, {"kind": "checksum", "payload": {}}, {"Content-Type": FAST, "Idempotency-Key": "k-1"}),
        (token, {"kind": "checksum", "payload": {}, "callback_url": "http://127.0.0.1/x"}, {"Content-Type": FAST}),
        (token, {"kind": "checksum", "payload": {}}, {"Content-Type": FAST, "Authorization": f"bearer {token}"}),
    ])
    assert routed == [True, True, True]
    assert [a.status_code for a in answers] == [202, 400, 202]


@pytest.mark.parametrize("header", [b"Bearer abc.def", b"Bearer  abc", b"bearer abc", b"BEARER abc", b"Bearer abc\t",
                                    b"Bearer ", b"Bearer a b", b"Bearer abc\xa0", b"Basic abc", b"Bearer\tabc"])
def test_the_fast_path_reads_a_token_only_as_fastapis_bearer_reads_it(header):
    token = fast_create._bearer_token(header)
    scheme, credentials = get_authorization_scheme_param(header.decode("latin-1"))
    if token is not None:  # else the route reads it, whatever it makes of it
        assert scheme.lower() == "bearer" and credentials == token
