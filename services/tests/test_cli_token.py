"""`taskplatform token` (``cli._token``): a JWT for a tenant with the scopes asked for, signed
with the key set the API verifies with; refusals name the option; the key is never printed. Run
as the deploy runs it (a real process), the token checked by a real API process."""

import time

import jwt
import pytest
import requests

from taskplatform import auth
from test_api import assert_error


def test_the_token_has_the_tenant_scopes_and_ttl_asked_for(platform, api_url):
    run = platform.run("token", "--tenant", "acme-cli", "--scopes", "tasks:read, admin", "--ttl", "120")
    assert run.returncode == 0, run.stderr
    token = run.stdout.strip()
    assert "\n" not in token and run.stderr == ""
    claims = jwt.decode(token, platform.jwt_key, algorithms=["HS256"], audience="taskplatform", issuer="shipyard")
    assert claims["sub"] == "acme-cli" and claims["scope"] == "admin tasks:read"
    assert 110 <= claims["exp"] - time.time() <= 121
    assert jwt.get_unverified_header(token)["kid"] == auth.legacy_kid(platform.jwt_key)
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{api_url}/v1/tasks", headers=headers, timeout=10).status_code == 200
    assert_error(requests.post(f"{api_url}/v1/tasks", json={"kind": "checksum"}, headers=headers, timeout=10),
                 403, "forbidden")


def test_without_scopes_it_has_every_scope_for_a_day(platform):
    run = platform.run("token", "--tenant", "acme-cli")
    claims = jwt.decode(run.stdout.strip(), platform.jwt_key, algorithms=["HS256"], audience="taskplatform")
    assert set(claims["scope"].split()) == {"tasks:read", "tasks:write", "schedules:write", "webhooks:write", "admin"}
    assert 86300 <= claims["exp"] - time.time() <= 86401


@pytest.mark.parametrize("args,says", [
    (["--tenant", "t", "--scopes", "tasks:all"], "--scopes: unknown scope(s) 'tasks:all'"),
    (["--tenant", "t", "--scopes", ","], "--scopes: name at least one"),
    (["--tenant", "t", "--ttl", "0"], "--ttl"),
    (["--tenant", "t", "--ttl", "99999999"], "--ttl"),
    (["--tenant", ""], "--tenant"),
    (["--tenant", "x" * 201], "--tenant"),
])
def test_a_refusal_names_the_option_and_prints_no_token(platform, args, says):
    run = platform.run("token", *args)
    assert run.returncode == 2 and run.stdout == ""
    assert says in run.stderr, run.stderr
    assert platform.jwt_key not in run.stderr


def test_an_unreadable_key_set_is_named_not_printed(platform, tmp_path):
    run = platform.run("token", "--tenant", "t", TASKS_SECRETS_DIR=str(tmp_path))
    assert run.returncode == 2 and run.stdout == ""
    assert auth.SECRET_NAME in run.stderr and str(tmp_path) in run.stderr
