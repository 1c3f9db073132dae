"""API keys (``taskplatform.api_keys``, ``routes/keys.py``): a tenant's admin creates one (shown
once, stored hashed), it acts for its tenant within its scopes, and once revoked or expired every
API process refuses it within the cache bound. Against real API processes, PostgreSQL and Redis."""

import hashlib
import re
import time
import uuid

import psycopg
import pytest
import requests

from taskplatform import scopes
from conftest import log_lines
from test_api import assert_error

KEY_FORMAT = re.compile(r"sy_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")


def secret_of(key: str) -> str:
    """The secret part of ``sy_<id>_<secret>`` (which may itself hold ``_``)."""
    return key[len("sy_") + 16 + 1:]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


class Admin:
    """A tenant's admin, with a JWT that has the admin scope alone."""

    def __init__(self, url: str, platform, tenant: str | None = None):
        self.url, self.tenant = url, tenant or f"tenant-{uuid.uuid4().hex[:8]}"
        self.headers = bearer(platform.token(self.tenant, scopes=(scopes.ADMIN,)))

    def create(self, url: str | None = None, **body):
        body = {"name": "ci", "scopes": [scopes.TASKS_READ], **body}
        return requests.post(f"{url or self.url}/v1/api-keys", json=body, headers=self.headers, timeout=10)

    def new_key(self, url: str | None = None, **body) -> tuple[str, str]:
        created = self.create(url, **body)
        assert created.status_code == 201, created.text
        return created.json()["id"], created.json()["key"]

    def list(self) -> list[dict]:
        listed = requests.get(f"{self.url}/v1/api-keys", headers=self.headers, timeout=10)
        assert listed.status_code == 200, listed.text
        return listed.json()["items"]

    def revoke(self, key_id: str, url: str | None = None):
        return requests.delete(f"{url or self.url}/v1/api-keys/{key_id}", headers=self.headers, timeout=10)


def list_tasks(url: str, key: str):
    return requests.get(f"{url}/v1/tasks", headers=bearer(key), timeout=10)


@pytest.fixture
def admin(api_url, platform) -> Admin:
    return Admin(api_url, platform)


def test_a_created_key_is_shown_once_and_listed_without_its_secret(admin):
    created = admin.create(name="deployer", scopes=["tasks:write", "tasks:read"], expires_in_seconds=3600)
    assert created.status_code == 201, created.text
    assert created.headers["Cache-Control"] == "no-store"
    body = created.json()
    assert KEY_FORMAT.fullmatch(body["key"]) and body["key"].startswith(f"sy_{body['id']}_")
    assert body["scopes"] == ["tasks:read", "tasks:write"] and body["name"] == "deployer"
    assert body["revoked_at"] is None and body["expires_at"] > body["created_at"]
    listed = admin.list()
    assert [k["id"] for k in listed] == [body["id"]]
    assert "key" not in listed[0] and "secret_hash" not in listed[0]
    assert secret_of(body["key"]) not in str(listed)


def test_only_the_secret_s_hash_is_stored(admin, platform):
    key_id, key = admin.new_key()
    with psycopg.connect(host="127.0.0.1", port=platform.pg.port, dbname=platform.pg.database, user=platform.pg.user,
                         password=platform.pg.password) as conn:
        stored = conn.execute("SELECT secret_hash FROM api_keys WHERE id = %s", (key_id,)).fetchone()[0]
    assert bytes(stored) == hashlib.sha256(secret_of(key).encode()).digest()


def test_a_key_acts_for_its_tenant_within_its_scopes(admin, api_url, platform):
    _, reader = admin.new_key(scopes=["tasks:read"])
    _, writer = admin.new_key(scopes=["tasks:write"])
    created = requests.post(f"{api_url}/v1/tasks", json={"kind": "checksum", "payload": {}}, headers=bearer(writer),
                            timeout=10)
    assert created.status_code == 202, created.text
    listed = list_tasks(api_url, reader)
    assert [t["id"] for t in listed.json()["items"]] == [created.json()["id"]]  # the admin's tenant's task
    assert_error(requests.post(f"{api_url}/v1/tasks", json={"kind": "checksum"}, headers=bearer(reader), timeout=10),
                 403, "forbidden")
    assert_error(list_tasks(api_url, writer), 403, "forbidden")
    assert_error(requests.get(f"{api_url}/v1/api-keys", headers=bearer(reader), timeout=10), 403, "forbidden")


def test_a_key_with_admin_manages_keys_and_a_tenant_sees_only_its_own(admin, api_url, platform):
    _, admin_key = admin.new_key(scopes=["admin"])
    made = requests.post(f"{api_url}/v1/api-keys", json={"name": "by-key", "scopes": ["tasks:read"]},
                         headers=bearer(admin_key), timeout=10)
    assert made.status_code == 201 and made.json()["created_by"].startswith("api_key:"), made.text
    other = Admin(api_url, platform)
    assert other.list() == []
    assert_error(other.revoke(made.json()["id"]), 404, "not_found")
    assert list_tasks(api_url, made.json()["key"]).status_code == 200  # the other tenant revoked nothing


@pytest.mark.parametrize("body", [
    {"scopes": ["tasks:everything"]}, {"scopes": []}, {"name": ""}, {"name": "nul\u0000"},
    {"expires_in_seconds": 10}, {"expires_in_seconds": 10**9}, {"extra": 1},
], ids=["unknown-scope", "no-scope", "empty-name", "nul-name", "too-short", "too-long", "extra-field"])
def test_an_invalid_create_is_422(admin, body):
    assert_error(admin.create(**body), 422, "invalid_request")


@pytest.mark.parametrize("token", ["sy_", "sy_0123456789abcdef_short", "sy_0123456789abcdef_" + "A" * 43,
                                   "sy_ZZZZ456789abcdef_" + "A" * 43])
def test_a_malformed_or_unknown_key_is_401(api_url, token):
    response = list_tasks(api_url, token)
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_key_with_a_wrong_secret_is_401(admin, api_url):
    _, key = admin.new_key()
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert_error(list_tasks(api_url, forged), 401, "unauthorized")


def refused_within(url: str, key: str, bound_seconds: float) -> float:
    """Seconds until ``url`` refuses ``key`` (401), asking again and again; fails past the bound."""
    started = time.monotonic()
    while list_tasks(url, key).status_code != 401:
        waited = time.monotonic() - started
        assert waited < bound_seconds, f"{url} still accepts the key {waited:.1f}s later (bound {bound_seconds}s)"
        time.sleep(0.05)
    return time.monotonic() - started


CACHE_SECONDS = 2


def test_a_revoked_key_is_refused_by_every_api_process_within_the_cache_bound(start_api, platform):
    first = start_api(TASKS_API_KEY_CACHE_SECONDS=CACHE_SECONDS).url
    second = start_api(TASKS_API_KEY_CACHE_SECONDS=CACHE_SECONDS).url
    admin = Admin(first, platform)
    key_id, key = admin.new_key()
    assert list_tasks(first, key).status_code == 200 and list_tasks(second, key).status_code == 200  # both cache it

    revoked = admin.revoke(key_id)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"], revoked.text
    assert_error(list_tasks(first, key), 401, "unauthorized")  # the revoking process at once
    assert "revoked" in list_tasks(first, key).json()["message"]
    # The other process within its cache's life (plus a request's time).
    refused_within(second, key, CACHE_SECONDS + 1.0)
    assert [k["revoked_at"] for k in admin.list()] == [revoked.json()["revoked_at"]]
    assert admin.revoke(key_id).json()["revoked_at"] == revoked.json()["revoked_at"]  # revoking again changes nothing


def test_an_expired_key_is_refused(start_api, platform):
    url = start_api(TASKS_API_KEY_CACHE_SECONDS=CACHE_SECONDS).url
    key_id, key = Admin(url, platform).new_key(expires_in_seconds=60)
    assert list_tasks(url, key).status_code == 200
    with psycopg.connect(host="127.0.0.1", port=platform.pg.port, dbname=platform.pg.database, user=platform.pg.user,
                         password=platform.pg.password) as conn:  # a minute is too long to wait for
        conn.execute("UPDATE api_keys SET expires_at = clock_timestamp() - interval '1 second' WHERE id = %s", (key_id,))
    refused_within(url, key, CACHE_SECONDS + 1.0)
    assert "expired" in list_tasks(url, key).json()["message"]


def test_a_key_s_secret_is_never_logged(admin, api_url, platform):
    key_id, key = admin.new_key()
    assert list_tasks(api_url, key).status_code == 200
    assert_error(list_tasks(api_url, key + "x"), 401, "unauthorized")
    lines = log_lines(platform, "api")
    secret = secret_of(key)
    assert not any(secret in str(line) for line in lines)
    assert any(line.get("credential") == f"api_key:{key_id}" for line in lines)  # which key, by its id
