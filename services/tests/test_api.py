"""The API contract against the real API process, PostgreSQL and Redis (no worker running:
tasks stay queued, which is what cancel and the listing tests need)."""

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor

import jwt
import psycopg
import pytest
import requests

ERROR_KEYS = {"code", "message", "request_id"}


def assert_error(response, status: int, code: str):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == ERROR_KEYS and body["code"] == code, body
    assert "Traceback" not in response.text
    assert body["request_id"] == response.headers["x-request-id"]


def test_create_returns_202_and_the_queued_task(tenant):
    response = tenant.create("checksum", {"x": [1, 2]})
    assert response.status_code == 202, response.text
    task = response.json()
    assert task["status"] == "queued" and task["kind"] == "checksum" and task["payload"] == {"x": [1, 2]}
    assert task["tenant"] == tenant.name and task["attempts"] == 0
    assert tenant.get(task["id"]).json() == task


def test_same_idempotency_key_returns_the_same_task(tenant):
    first = tenant.create("checksum", {"n": 1}, key="order-42")
    again = tenant.create("checksum", {"n": 1}, key="order-42")
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers.get("idempotent-replayed") == "true"
    assert tenant.create("checksum", {"n": 1}, key="order-43").json()["id"] != first.json()["id"]


def test_an_idempotency_key_reused_with_another_body_is_409(tenant):
    first = tenant.create("checksum", {"n": 1}, key="order-7").json()
    assert_error(tenant.create("checksum", {"n": 2}, key="order-7"), 409, "idempotency_key_reused")
    assert_error(tenant.create("sleep", {"seconds": 1}, key="order-7"), 409, "idempotency_key_reused")
    assert_error(tenant.create("checksum", {}, key="order-7"), 409, "idempotency_key_reused")
    again = tenant.create("checksum", {"n": 1.0}, key="order-7")  # the same JSON value
    assert again.status_code == 202 and again.json() == first


def test_the_same_idempotency_key_sent_concurrently_makes_one_task(tenant):
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: tenant.create("checksum", {"n": 1}, key="burst"), range(16)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") != "true" for r in responses) == 1


def test_every_create_answered_202_is_its_own_committed_row(tenant, platform):
    """Creates arriving together are committed together (``creates``, one INSERT for those in
    flight): each 202 still names a row of its own, with its own payload, and each keyed
    request's replay finds its own task."""
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda n: tenant.create("checksum", {"n": n}, key=f"k-{n}" if n % 2 else None),
                                  range(64)))
    assert {r.status_code for r in responses} == {202}
    answered = {r.json()["id"]: r.json()["payload"]["n"] for r in responses}
    with psycopg.connect(host="127.0.0.1", port=platform.pg.port, dbname=platform.pg.database, user=platform.pg.user,
                         password=platform.pg.password) as conn:
        stored = dict(conn.execute("SELECT id::text, (payload->>'n')::int FROM tasks WHERE tenant = %s",
                                   (tenant.name,)).fetchall())
    assert stored == answered and sorted(stored.values()) == list(range(64))
    replays = [tenant.create("checksum", {"n": n}, key=f"k-{n}") for n in range(1, 64, 2)]
    assert [(r.json()["id"], r.headers.get("idempotent-replayed")) for r in replays] == [
        (responses[n].json()["id"], "true") for n in range(1, 64, 2)]


def test_idempotency_keys_are_per_tenant(tenant, other_tenant):
    assert tenant.create(key="shared").json()["id"] != other_tenant.create(key="shared").json()["id"]


def test_another_tenants_task_is_a_404(tenant, other_tenant):
    task = tenant.create().json()
    assert_error(other_tenant.get(task["id"]), 404, "not_found")
    assert_error(other_tenant.session.post(f"{other_tenant.base}/v1/tasks/{task['id']}/cancel"), 404, "not_found")
    assert task["id"] not in [t["id"] for t in other_tenant.session.get(f"{other_tenant.base}/v1/tasks").json()["items"]]


def test_unknown_and_malformed_ids_are_404(tenant):
    assert_error(tenant.get("00000000-0000-0000-0000-000000000000"), 404, "not_found")
    assert_error(tenant.get("not-a-uuid"), 404, "not_found")


def test_missing_bad_and_expired_tokens_are_401(api_url, platform):
    assert_error(requests.get(f"{api_url}/v1/tasks"), 401, "unauthorized")
    forged = jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, "not-the-key-but-long-enough-for-hs256", algorithm="HS256")
    assert_error(requests.get(f"{api_url}/v1/tasks", headers={"Authorization": f"Bearer {forged}"}), 401, "unauthorized")
    expired = jwt.encode({"sub": "x", "exp": int(time.time()) - 10}, platform.jwt_key, algorithm="HS256")
    assert_error(requests.get(f"{api_url}/v1/tasks", headers={"Authorization": f"Bearer {expired}"}), 401, "unauthorized")


def test_invalid_input_is_422_in_the_error_shape(tenant):
    assert_error(tenant.create("launch-missiles"), 422, "invalid_request")
    assert_error(tenant.create("sleep", {"seconds": 999}), 422, "invalid_request")
    assert_error(tenant.create("fail", {}), 422, "invalid_request")
    broken = tenant.session.post(f"{tenant.base}/v1/tasks", data=b"{not json", timeout=5,
                                 headers={"Content-Type": "application/json"})
    assert_error(broken, 422, "invalid_request")
    assert_error(tenant.session.get(f"{tenant.base}/v1/tasks", params={"cursor": "garbage"}), 400, "invalid_cursor")
    assert_error(tenant.session.get(f"{tenant.base}/nope"), 404, "not_found")


@pytest.mark.parametrize("method, path, allowed", [
    ("PUT", "/v1/tasks", "GET, POST"),  # two routes, one path
    ("DELETE", "/v1/tasks/00000000-0000-0000-0000-000000000000", "GET"),
    ("GET", "/v1/tasks/00000000-0000-0000-0000-000000000000/cancel", "POST"),
    ("POST", "/health", "GET"),
    ("POST", "/openapi.json", "GET, HEAD"),  # FastAPI's own route, outside the routers
])
def test_a_method_a_path_does_not_answer_is_405_with_every_allowed_method(tenant, method, path, allowed):
    # Starlette's own Allow names the first route of the path only; the API's names every
    # route's, wherever the route is registered (the app's router or an included one).
    refused = tenant.session.request(method, f"{tenant.base}{path}", timeout=5)
    assert_error(refused, 405, "method_not_allowed")
    assert refused.headers["Allow"] == allowed


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


@pytest.mark.parametrize("cursor", [
    "garbage", "====", "é", "x" * 5000,
    b64(b"[1, 2]"), b64(b'["2026-01-01T00:00:00+00:00", 123]'), b64(b'[123, "00000000-0000-0000-0000-000000000000"]'),
    b64(b'["2026-01-01T00:00:00", "00000000-0000-0000-0000-000000000000"]'),  # no time zone
    b64(b'["0001-01-01T00:00:00+14:00", "00000000-0000-0000-0000-000000000000"]'),  # before year 1 in UTC
    b64(b'{"a": 1, "b": 2}'), b64(b'"ab"'), b64(b"\xff\xfe"), b64(b"null"), b64(b"[" * 400),
], ids=lambda c: c[:24])
def test_a_malformed_cursor_is_400(tenant, cursor):
    response = tenant.session.get(f"{tenant.base}/v1/tasks", params={"cursor": cursor})
    assert_error(response, 400, "invalid_cursor")


def post_raw(tenant, body: str):
    return tenant.session.post(f"{tenant.base}/v1/tasks", data=body.encode(), timeout=10,
                               headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("payload", [
    '{"x": NaN}', '{"x": Infinity}', '{"x": [1, -Infinity]}', '{"x": "a\\u0000b"}', '{"a\\u0000": 1}',
    '{"x": {"y": ["\\ud800"]}}', '{"\\udfff": 1}', '{"seconds": NaN}',
])
def test_a_payload_postgresql_cannot_store_is_422(tenant, payload):
    for kind in ("checksum", "sleep"):
        assert_error(post_raw(tenant, f'{{"kind": "{kind}", "payload": {payload}}}'), 422, "invalid_request")


def test_unicode_that_postgresql_stores_is_accepted_as_is(tenant):
    payload = {"emoji": "\U0001f600", "ctl": "\x01\x7f", "k\u00e9y": "v"}
    response = post_raw(tenant, json.dumps({"kind": "checksum", "payload": payload}))
    assert response.status_code == 202 and response.json()["payload"] == payload
    paired = post_raw(tenant, '{"kind": "checksum", "payload": {"pair": "\\ud83d\\ude00"}}')  # a surrogate pair
    assert paired.status_code == 202 and paired.json()["payload"] == {"pair": "\U0001f600"}


def test_a_kind_filter_with_nul_is_422(tenant):
    assert_error(tenant.session.get(f"{tenant.base}/v1/tasks", params={"kind": "check\x00sum"}), 422,
                 "invalid_request")


def test_request_id_is_taken_from_the_caller(tenant):
    response = tenant.session.get(f"{tenant.base}/v1/tasks/nope", headers={"X-Request-ID": "abc-123"})
    assert response.json()["request_id"] == "abc-123" and response.headers["x-request-id"] == "abc-123"


def test_cancel_a_queued_task_then_cancel_again_is_409(tenant):
    task = tenant.create("sleep", {"seconds": 1}).json()
    cancelled = tenant.session.post(f"{tenant.base}/v1/tasks/{task['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert_error(tenant.session.post(f"{tenant.base}/v1/tasks/{task['id']}/cancel"), 409, "conflict")
    assert_error(tenant.session.post(f"{tenant.base}/v1/tasks/{task['id']}/retry"), 409, "conflict")


def test_pagination_has_no_gaps_or_duplicates_and_filters(tenant):
    created = [tenant.create("checksum" if i % 3 else "sleep", {"seconds": 0} if i % 3 == 0 else {"i": i}).json()["id"]
               for i in range(23)]
    seen, cursor = [], None
    while True:
        page = tenant.session.get(f"{tenant.base}/v1/tasks", params={"limit": 5, **({"cursor": cursor} if cursor else {})}).json()
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 23 and set(seen) == set(created)
    assert seen == list(reversed(created))  # newest first
    sleeps = tenant.session.get(f"{tenant.base}/v1/tasks", params={"kind": "sleep", "limit": 100}).json()["items"]
    assert len(sleeps) == 8 and {t["kind"] for t in sleeps} == {"sleep"}
    queued = tenant.session.get(f"{tenant.base}/v1/tasks", params={"status": "queued", "limit": 100}).json()["items"]
    assert len(queued) == 23
    assert_error(tenant.session.get(f"{tenant.base}/v1/tasks", params={"status": "bogus"}), 422, "invalid_request")


def test_rate_limit_from_live_config_gives_429_with_retry_after(tenant, runtime_config):
    runtime_config(rate_limit_per_minute=5)
    statuses = [tenant.session.get(f"{tenant.base}/v1/tasks").status_code for _ in range(7)]
    if 429 not in statuses:  # the minute window rolled over between requests: one more round
        statuses = [tenant.session.get(f"{tenant.base}/v1/tasks").status_code for _ in range(7)]
    assert statuses.count(200) <= 5 and 429 in statuses
    limited = tenant.session.get(f"{tenant.base}/v1/tasks")
    assert_error(limited, 429, "rate_limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60


def test_health_ready_version_and_config(api_url):
    assert requests.get(f"{api_url}/health").json() == {"status": "ok"}
    ready = requests.get(f"{api_url}/health/ready")
    assert ready.status_code == 200 and ready.json()["redis"] == "ok"
    assert requests.get(f"{api_url}/version").json() == {"version": "test-1", "colour": "green"}
    config = requests.get(f"{api_url}/v1/config").json()
    assert set(config) == {"version", "hash", "maintenance", "enabled_kinds", "applied_at", "rejected",
                           "watch"} and len(config["hash"]) == 16


def test_config_hot_reload_applies_valid_and_rejects_invalid(api_url, platform, runtime_config):
    def rejections() -> float:
        text = requests.get(f"{api_url}/metrics").text
        return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith("config_rejections_total"))

    version = runtime_config(rate_limit_per_minute=1234)
    before = rejections()
    platform.config_file.write_text('{"version": "bad", "rate_limit_per_minute": -1}')
    deadline = time.monotonic() + 10
    while rejections() < before + 2 and time.monotonic() < deadline:  # both API processes reject it
        time.sleep(0.1)
    assert rejections() >= before + 2
    assert requests.get(f"{api_url}/v1/config").json()["version"] == version  # the old one stays
    ready = requests.get(f"{api_url}/health/ready")
    assert ready.status_code == 200 and ready.json()["redis"] == "ok"


def test_metrics_expose_the_platform_figures(api_url, tenant):
    tenant.create()
    text = requests.get(f"{api_url}/metrics").text
    for name in ("http_request_duration_seconds_bucket", "http_requests_total", "tasks_created_total",
                 "queue_stream_length", "config_reloads_total", "config_version_info"):
        assert name in text, name


# --- issue 23: the payload is validated whether given or not; unknown kinds; delays ----------
@pytest.mark.parametrize("body, missing", [
    ({"kind": "sleep"}, "payload.seconds: Field required"),
    ({"kind": "sleep", "payload": {}}, "payload.seconds: Field required"),
    ({"kind": "fail"}, "give 'times' (fail that many attempts) or 'always': true"),
])
def test_a_payload_left_out_is_validated_as_the_empty_object(tenant, body, missing):
    response = tenant.session.post(f"{tenant.base}/v1/tasks", json=body, timeout=10)
    assert_error(response, 422, "invalid_request")
    assert missing in response.json()["message"], response.json()
    assert tenant.session.get(f"{tenant.base}/v1/tasks", timeout=10).json()["items"] == []  # nothing was stored


def test_kinds_without_required_fields_still_take_no_payload(tenant):
    for kind in ("checksum", "smoke"):
        response = tenant.session.post(f"{tenant.base}/v1/tasks", json={"kind": kind}, timeout=10)
        assert response.status_code == 202 and response.json()["payload"] == {}, response.text


def test_an_unknown_kind_is_422_naming_the_known_ones(tenant):
    response = tenant.session.post(f"{tenant.base}/v1/tasks", json={"kind": "resize", "payload": {}}, timeout=10)
    assert_error(response, 422, "invalid_request")
    message = response.json()["message"]
    assert "'resize'" in message and all(f"'{kind}'" in message for kind in ("checksum", "fail", "sleep", "smoke"))


def test_a_delayed_task_is_scheduled_with_its_time(tenant):
    before = time.time()
    response = tenant.session.post(f"{tenant.base}/v1/tasks", timeout=10,
                                   json={"kind": "checksum", "payload": {"n": 1}, "delay_seconds": 600})
    assert response.status_code == 202, response.text
    task = response.json()
    assert task["status"] == "scheduled" and task["run_after"] is not None
    from datetime import datetime
    assert before + 599 <= datetime.fromisoformat(task["run_after"]).timestamp() <= time.time() + 601
    at = "2100-01-01T00:00:00+01:00"
    far = tenant.session.post(f"{tenant.base}/v1/tasks", json={"kind": "checksum", "run_at": at}, timeout=10)
    assert_error(far, 400, "run_at_too_far")
    cancelled = tenant.session.post(f"{tenant.base}/v1/tasks/{task['id']}/cancel", timeout=10)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text


def test_a_run_at_in_the_past_queues_the_task_at_once(tenant):
    response = tenant.session.post(f"{tenant.base}/v1/tasks", timeout=10,
                                   json={"kind": "checksum", "run_at": "2020-01-01T00:00:00Z"})
    assert response.status_code == 202 and response.json()["status"] == "queued", response.text
    assert response.json()["run_after"] is None


@pytest.mark.parametrize("timing, problem", [
    ({"run_at": "2030-01-01T00:00:00"}, "timezone"),
    ({"run_at": 1893456000}, "RFC 3339"),
    ({"run_at": "2030-01-01T00:00:00Z", "delay_seconds": 5}, "give run_at or delay_seconds, not both"),
    ({"run_at": None, "delay_seconds": 5}, "give run_at or delay_seconds, not both"),
    ({"delay_seconds": -1}, "greater than or equal to 0"),
    ({"delay_seconds": 2_592_001}, "less than or equal to 2592000"),
    ({"delay_seconds": "5"}, "valid number"),
])
def test_a_bad_delay_is_422(tenant, timing, problem):
    response = tenant.session.post(f"{tenant.base}/v1/tasks", json={"kind": "checksum", **timing}, timeout=10)
    assert_error(response, 422, "invalid_request")
    assert problem in response.json()["message"], response.json()
