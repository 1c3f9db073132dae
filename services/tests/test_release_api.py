"""Blue-green releases, API side, against real API and worker processes: every answer says which
release gave it (``X-Release``), refusals too; ``taskplatform smoke`` (through the official Python
client, ``clients/python``) passes only for a round trip served and run by its own colour and
version, and says what failed, naming the colour, within its timeout otherwise; the test-only
fault share fails that share of /v1/ requests, and never a health probe.

The session's API and workers are green, version test-1 (``Platform.env``)."""

import base64
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import live_workers, wait_worker_ready
from test_api import assert_error
from test_api_limits import post_head, raw_request, read_status
from test_observability import samples

from taskplatform_testing.servers import SERVICES


def test_every_answer_says_which_release_gave_it(start_api, tenant):
    url = start_api(TASKS_RELEASE_COLOUR="blue", TASKS_BUILD_VERSION="9.9.9", TASKS_API_MAX_CONCURRENT_REQUESTS=1).url
    tenant.base = url
    answers = {
        "health": requests.get(f"{url}/health", timeout=10),
        "ready": requests.get(f"{url}/health/ready", timeout=10),
        "list": tenant.session.get(f"{url}/v1/tasks", timeout=10),
        "create": tenant.create("checksum"),
        "no token": requests.get(f"{url}/v1/tasks", timeout=10),
        "no such task": tenant.get("00000000-0000-0000-0000-000000000000"),
        "no such path": requests.get(f"{url}/nowhere", timeout=10),
        "invalid": tenant.create("sleep", {"seconds": "soon"}),
    }
    assert {name: answer.status_code for name, answer in answers.items()} == {
        "health": 200, "ready": 200, "list": 200, "create": 202, "no token": 401, "no such task": 404,
        "no such path": 404, "invalid": 422}
    body = b'{"kind": "checksum", "payload": {}}'
    held = raw_request(url, post_head(tenant, len(body)), body[:10])  # holds the one slot
    try:
        deadline = time.monotonic() + 20
        while (refused := requests.get(f"{url}/v1/tasks", timeout=10)).status_code != 503:
            assert refused.status_code == 401, refused.text  # until the held request has the slot
            assert time.monotonic() < deadline, "the held request never took the slot"
            time.sleep(0.05)
        assert_error(refused, 503, "overloaded")
        answers["overloaded"] = refused
    finally:
        held.close()
    assert {name: answer.headers.get("X-Release") for name, answer in answers.items()} == {
        name: "blue/9.9.9" for name in answers}


def test_the_session_api_names_its_own_release(api_url):
    assert requests.get(f"{api_url}/health", timeout=10).headers["X-Release"] == "green/test-1"


def test_the_fault_share_fails_that_share_of_v1_requests_and_no_probe(start_api, tenant):
    api = start_api(processes=2, TASKS_FAULT_ERROR_SHARE=0.5)
    tenant.base = api.url
    answers = [tenant.session.get(f"{api.url}/v1/tasks", timeout=10) for _ in range(200)]
    faults = [answer for answer in answers if answer.status_code == 500]
    assert {answer.status_code for answer in answers} == {200, 500}
    # Each process fails every second request it serves: 100 of 200, less one per process whose
    # count is odd.
    assert 98 <= len(faults) <= 100, len(faults)
    for answer in faults:
        assert answer.json()["code"] == "injected_fault" and answer.headers["X-Release"] == "green/test-1"
        assert answer.json()["request_id"] == answer.headers["X-Request-Id"]
    # The preview route is spared: a bad release passes its smoke test and meets the watch.
    previews = [tenant.session.get(f"{api.url}/v1/tasks", headers={"X-Shipyard-Preview": "1"}, timeout=10).status_code
                for _ in range(20)]
    assert set(previews) == {200}
    probes = [requests.get(f"{api.url}{path}", timeout=10).status_code
              for path in ("/health", "/health/ready") for _ in range(50)]
    assert set(probes) == {200}
    # Counted like any error of the API: a release watching the error rate sees them.
    counted = sum(value for labels, value in samples(f"{api.url}/metrics", "http_requests_total")
                  if labels["status"] == "500")
    assert counted == len(faults)


@pytest.fixture
def green_worker(platform, api_url):
    assert not live_workers(platform), "workers left running by an earlier test"
    worker = platform.start_worker()
    wait_worker_ready(worker)
    yield worker
    platform.stop_workers()


def smoke(platform, base_url: str, *options: str, **env) -> tuple[int, dict]:
    """Runs ``taskplatform smoke`` as the deploy does (its process's TASKS_* as ``env``):
    (exit code, its one JSON line). Nothing secret may appear in what it prints."""
    done = platform.run("smoke", "--base-url", base_url, "--preview-header", *options, **env)
    output = done.stdout + done.stderr
    assert platform.jwt_key not in output and "eyJ" not in output, output  # no key, no JWT
    lines = done.stdout.splitlines()
    assert len(lines) == 1, output
    return done.returncode, json.loads(lines[0])


class _Front(BaseHTTPRequestHandler):
    """A loopback HTTP server in front of the API, as the router's preview route is: it passes
    each request on to ``server.api`` and keeps the headers it got (``server.seen``), or, without
    an API, answers every request as a proxy with no upstream does (502, an HTML page)."""

    protocol_version = "HTTP/1.1"

    def _pass_on(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.command, self.path, dict(self.headers)))
        if self.server.api is None:
            status, headers, content = 502, {"Content-Type": "text/html"}, b"<html>502 Bad Gateway</html>"
        else:
            passed = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            answer = requests.request(self.command, f"{self.server.api}{self.path}", headers=passed, data=body,
                                      timeout=10)
            status, content = answer.status_code, answer.content
            headers = {k: v for k, v in answer.headers.items()
                       if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding")}
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = _pass_on

    def log_message(self, *args):  # the test reads ``seen``; stderr stays quiet
        pass


@pytest.fixture
def front():
    """Start a ``_Front`` for one test: ``front(api_url or None)`` → (its URL, the requests seen)."""
    servers = []

    def start(api: str | None):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Front)
        server.api, server.seen = api, []
        # Polled every 0.05 s for shutdown (0.5 s by default: half a second of the test's teardown).
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}", server.seen

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _claims(authorization: str) -> dict:
    """A bearer JWT's claims (not verified: the API did that)."""
    payload = authorization.split(" ", 1)[1].split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_smoke_passes_for_a_round_trip_of_its_own_release(platform, api_url, green_worker):
    code, report = smoke(platform, api_url, "--timeout", "20")
    assert code == 0 and report["ok"], report
    assert report["api"] == {"colour": "green", "version": "test-1"}
    assert report["worker"]["colour"] == "green" and report["worker"]["version"] == "test-1", report
    assert report["worker"]["worker"].endswith(f"-{green_worker.pid}"), report
    assert 0 < report["seconds"] < 20 and report["task_id"]


def test_smoke_calls_the_api_through_the_python_client_with_a_scoped_token(platform, api_url, green_worker, front):
    """What reached the API: the official client's requests (its User-Agent; the create with an
    Idempotency-Key, so the client may resend it), a token for the smoke tenant with the tasks
    scopes only, the preview header on each."""
    url, seen = front(api_url)
    code, report = smoke(platform, url, "--timeout", "20")
    assert code == 0 and report["ok"], report
    creates = [headers for method, path, headers in seen if method == "POST"]
    reads = [path for method, path, headers in seen if method == "GET"]
    assert len(creates) == 1 and creates[0]["Idempotency-Key"].startswith("smoke-")
    assert reads and set(reads) == {f"/v1/tasks/{report['task_id']}"}
    for method, path, headers in seen:
        assert headers["User-Agent"].startswith("shipyard-tasks-client/"), (method, path)
        assert headers["x-shipyard-preview"] == "1"
        claims = _claims(headers["Authorization"])
        assert claims["sub"] == "shipyard-smoke" and claims["scope"] == "tasks:read tasks:write", (method, path)


def test_smoke_fails_when_another_release_serves_the_create(platform, api_url, green_worker):
    code, report = smoke(platform, api_url, "--timeout", "20", TASKS_RELEASE_COLOUR="blue", TASKS_BUILD_VERSION="0.2.0")
    assert code == 1 and not report["ok"], report
    assert report["error"] == ("create served by green test-1, expected blue 0.2.0: the preview route does not "
                               "reach api-blue"), report
    assert report["api"] == {"colour": "green", "version": "test-1"}


def test_smoke_fails_when_a_worker_of_another_version_runs_the_task(platform, start_api, green_worker):
    """The new API is up but the colour's workers still run the old version."""
    url = start_api(TASKS_BUILD_VERSION="test-2").url
    code, report = smoke(platform, url, "--timeout", "20", TASKS_BUILD_VERSION="test-2")
    assert code == 1 and not report["ok"], report
    assert report["error"].startswith("task run by green test-1 (worker "), report
    assert report["error"].endswith("expected green test-2: recreate worker-green with the new version"), report


def test_smoke_fails_within_its_timeout_when_no_worker_of_its_colour_takes_the_task(platform, api_url):
    assert not live_workers(platform), "workers left running by an earlier test"
    code, report = smoke(platform, api_url, "--timeout", "3")
    assert code == 1 and not report["ok"], report
    assert report["error"] == ("task still queued after 3 s: no worker of colour green took it "
                               "(is worker-green running?)"), report
    assert 3 <= report["seconds"] < 10 and report["task_id"], report


def test_smoke_fails_within_its_timeout_when_no_api_answers_behind_the_preview_route(platform, front):
    """The router up, the colour's API not: a 502 page, which the client sends the create again
    for (it carries an Idempotency-Key) and then gives up on."""
    url, seen = front(None)
    code, report = smoke(platform, url, "--timeout", "5")
    assert code == 1 and not report["ok"], report
    assert report["error"] == (f"create answered 502 without x-release: no task API answered at {url} "
                               "(is api-green running and the router's preview route up?)"), report
    assert report["seconds"] < 5 and "task_id" not in report, report
    assert [method for method, _, _ in seen] == ["POST"] * 3  # RETRY.attempts sends, then the error


def test_smoke_fails_at_once_when_nothing_listens_at_the_base_url(platform):
    with socket.socket() as held:  # a port nothing listens on: bound, never listening
        held.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{held.getsockname()[1]}"
        code, report = smoke(platform, url, "--timeout", "5")
    assert code == 1 and not report["ok"], report
    assert report["error"].startswith(f"create got no answer: POST {url}/v1/tasks: no answer after 3 attempt(s): "
                                      "ConnectError"), report
    assert report["error"].endswith("(is api-green running and the router's preview route up?)"), report
    assert report["seconds"] < 5, report


def test_smoke_says_so_when_the_image_lacks_the_python_client(platform, api_url):
    """An image built without clients/python cannot run its smoke test: one JSON line says why."""
    code, report = smoke(platform, api_url, "--timeout", "5", PYTHONPATH=str(SERVICES))
    assert code == 1 and not report["ok"], report
    assert report["error"].startswith("cannot load the smoke test: No module named 'shipyard_tasks'"), report
    assert "shipyard-tasks-client" in report["error"], report
