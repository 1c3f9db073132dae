"""Bearer tokens: issuer and audience checked, the key chosen by ``kid`` from the key set secret,
which is read again when it changes (a key added, then the old one retired, with no restart and
nobody logged out), refusals in the error shape in the API's own words. Against real API
processes, PostgreSQL and Redis."""

import json
import os
import re
import secrets
import shutil
import time

import jwt
import pytest
import requests

from taskplatform import auth
from conftest import sign_hs256
from test_api import assert_error

ISSUER, AUDIENCE = "shipyard", "taskplatform"  # the API's defaults (TASKS_JWT_ISSUER, TASKS_JWT_AUDIENCE)
# What PyJWT says; none of it may reach a client.
LIBRARY_WORDS = ("Signature has expired", "Signature verification failed", "Invalid audience", "Invalid issuer",
                 "Not enough segments", "Token is missing", "Invalid header", "Invalid payload", "Invalid crypto padding",
                 "is not allowed", "not yet valid", "Audience doesn't match")


def claims(**overrides) -> dict:
    now = int(time.time())
    doc = {"sub": "tenant-auth", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300}
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


def sign(key: str, kid: str | None, **overrides) -> str:
    return jwt.encode(claims(**overrides), key, algorithm="HS256", headers={"kid": kid} if kid else None)


def get_tasks(url: str, token: str):
    return requests.get(f"{url}/v1/tasks", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def assert_refused(response):
    assert_error(response, 401, "unauthorized")
    assert not any(word.lower() in response.text.lower() for word in LIBRARY_WORDS), response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_valid_token_passes(api_url, platform):
    key = platform.jwt_key
    assert get_tasks(api_url, sign(key, auth.legacy_kid(key))).status_code == 200


# Times as offsets from the moment the test runs: ids must not depend on the clock, or two
# xdist workers collecting a second apart disagree on the test list.
@pytest.mark.parametrize("overrides", [
    {"iss": "someone-else"}, {"aud": "another-api"}, {"aud": ["another-api", "more"]}, {"iss": None}, {"aud": None},
    {"sub": None}, {"exp": None}, {"exp": -60}, {"nbf": 3600},
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_a_token_for_another_issuer_or_audience_or_out_of_date_is_401(api_url, platform, overrides):
    now = int(time.time())
    overrides = {k: now + v if k in ("exp", "nbf") and v is not None else v for k, v in overrides.items()}
    key = platform.jwt_key
    assert_refused(get_tasks(api_url, sign(key, auth.legacy_kid(key), **overrides)))


@pytest.mark.parametrize("token", [
    "", "x", "a.b.c", "e30.e30.", jwt.encode({"sub": "x"}, "k" * 64, algorithm="HS512"),
    jwt.encode(claims(), "not-the-key-but-long-enough-for-hs256"),
    jwt.encode(claims(), None, algorithm="none"),
], ids=["empty", "word", "three-words", "empty-json", "hs512", "other-key", "alg-none"])
def test_a_malformed_or_foreign_token_is_401_in_our_words(api_url, token):
    assert_refused(get_tasks(api_url, token))
    assert_refused(requests.get(f"{api_url}/v1/tasks", headers={"Authorization": f"Basic {token}"}, timeout=10))


def test_an_unknown_kid_is_401(api_url, platform):
    assert_refused(get_tasks(api_url, sign(platform.jwt_key, "no-such-kid")))
    assert_refused(get_tasks(api_url, sign_hs256(platform.jwt_key, claims(), {"alg": "HS256", "kid": 7})))


def test_a_token_without_kid_passes_while_the_key_file_holds_one_plain_key(api_url, platform):
    """Deployments made before key sets: a plain key file, tokens minted without a kid."""
    assert get_tasks(api_url, sign(platform.jwt_key, None)).status_code == 200


@pytest.mark.parametrize("subject", ["nul\x00in-it", "lone-\ud800", "x" * 201, "", 42, None])
def test_a_subject_that_cannot_be_a_tenant_is_401_not_a_500(api_url, platform, subject):
    key = platform.jwt_key
    token = sign_hs256(key, claims() | {"sub": subject}, {"alg": "HS256", "kid": auth.legacy_kid(key)})
    assert_refused(get_tasks(api_url, token))


@pytest.fixture
def own_secrets(platform, tmp_path):
    """A copy of the platform's secrets dir whose key set this test rewrites."""
    directory = tmp_path / "secrets"
    shutil.copytree(platform.secrets_dir, directory)
    for path in directory.iterdir():
        path.chmod(0o600)
    return directory


def write_key_set(directory, keys: list[tuple[str, str]]) -> None:
    """Like the deploy: a new file replaces the old by rename."""
    tmp = directory / "jwt_signing_key.tmp"
    tmp.write_text(json.dumps({"keys": [{"kid": kid, "k": key} for kid, key in keys]}))
    os.replace(tmp, directory / auth.SECRET_NAME)


def wait_accepted(url: str, token: str, accepted: bool, timeout: float = 20) -> None:
    """Every API process must have read the new key set: the answer must hold 10 times in a row
    (requests spread over the processes)."""
    deadline = time.monotonic() + timeout
    in_a_row = 0
    while in_a_row < 10:
        if (get_tasks(url, token).status_code == 200) == accepted:
            in_a_row += 1
            continue
        in_a_row = 0
        assert time.monotonic() < deadline, f"token not {'accepted' if accepted else 'refused'} within {timeout}s"
        time.sleep(0.05)


def test_a_key_is_added_then_the_old_one_retired_without_a_restart(start_api, own_secrets):
    old, new = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    write_key_set(own_secrets, [("2026-10", old)])
    url = start_api(processes=2, TASKS_SECRETS_DIR=own_secrets, TASKS_JWT_KEYS_REFRESH_SECONDS=0.2).url
    old_token, new_token = sign(old, "2026-10"), sign(new, "2026-11")
    assert get_tasks(url, old_token).status_code == 200
    assert_refused(get_tasks(url, new_token))

    write_key_set(own_secrets, [("2026-11", new), ("2026-10", old)])  # the new key signs from now on
    wait_accepted(url, new_token, True)
    assert get_tasks(url, old_token).status_code == 200  # nobody logged out

    write_key_set(own_secrets, [("2026-11", new)])  # every old token has expired: retire the old key
    wait_accepted(url, old_token, False)
    assert_refused(get_tasks(url, old_token))
    assert get_tasks(url, new_token).status_code == 200


def test_a_broken_key_set_keeps_the_one_before(start_api, own_secrets):
    """A half-written or wrong key set file must not log everyone out: it is reported, and the
    key set before stays in use."""
    key = secrets.token_urlsafe(32)
    write_key_set(own_secrets, [("k1", key)])
    api = start_api(TASKS_SECRETS_DIR=own_secrets, TASKS_JWT_KEYS_REFRESH_SECONDS=0.2)
    (own_secrets / "jwt_signing_key.tmp").write_text('{"keys": [{"kid": "k1"')
    os.replace(own_secrets / "jwt_signing_key.tmp", own_secrets / auth.SECRET_NAME)
    deadline = time.monotonic() + 20
    while get_tasks(api.url, sign(key, "k1")).status_code == 200 and \
            "JWT key set not reloaded" not in api.log_path.read_text():
        assert time.monotonic() < deadline, "the broken key set was never read"
        time.sleep(0.05)
    assert get_tasks(api.url, sign(key, "k1")).status_code == 200


@pytest.mark.parametrize("text, problem", [
    ("", "empty"), ("{", "not JSON"), ('{"keys": []}', "at least one key"), ('{"keys": [{"kid": "a"}]}', "keys[0]"),
    ('{"keys": [{"kid": "a", "k": "x"}, {"kid": "a", "k": "y"}]}', "twice"),
])
def test_a_key_set_in_a_wrong_format_is_named(text, problem):
    with pytest.raises(auth.KeySetError, match=re.escape(problem)):
        auth.KeySet.parse(text)


def test_the_first_key_of_a_set_signs_and_every_key_verifies():
    keys = auth.KeySet.parse(json.dumps({"keys": [{"kid": "new", "k": "n" * 40}, {"kid": "old", "k": "o" * 40}]}))
    token = keys.issue("t", ISSUER, AUDIENCE)
    assert jwt.get_unverified_header(token)["kid"] == "new"
    assert keys.key_for("old") == "o" * 40 and keys.key_for(None) is None  # a kid is needed with two keys


def test_a_token_accepted_before_is_refused_once_it_expires(api_url, platform):
    """Verified tokens are remembered (verifying is most of a request's CPU), but not past their exp."""
    key = platform.jwt_key
    token = sign(key, auth.legacy_kid(key), exp=int(time.time()) + 2)
    assert get_tasks(api_url, token).status_code == 200
    deadline = time.monotonic() + 15
    while (response := get_tasks(api_url, token)).status_code == 200:
        assert time.monotonic() < deadline, "an expired token is still accepted"
        time.sleep(0.1)
    assert_refused(response)
    assert "expired" in response.json()["message"]
