"""Every route of the app needs a scope or says it is public (``taskplatform.scopes``), and a
credential without the route's scope is refused 403 in the error shape naming it: the routes
are read from the app itself (``app.routes``, the ones the OpenAPI leaves out included), so a
route added without a scope fails here. Requests go to a real API process."""

import re
import uuid

import pytest
import requests
from fastapi import APIRouter
from fastapi.routing import APIRoute

from taskplatform import auth, scopes
from taskplatform_testing.app import built_app
from conftest import sign_hs256
from test_api import assert_error
from test_api_auth import claims


def app_routes() -> list[APIRoute]:
    """The routes of an app built as an API process builds it (no connections are opened)."""
    return [route for route in built_app().routes if isinstance(route, APIRoute)]


ROUTES = [(method, route) for route in app_routes() for method in sorted(route.methods - {"HEAD"})]
SCOPED = [(m, r) for m, r in ROUTES if scopes.required_scope_of(r)]
PUBLIC = [(m, r) for m, r in ROUTES if scopes.is_public(r)]


def route_id(case) -> str:
    method, route = case
    return f"{method} {route.path}"


def concrete(path: str) -> str:
    """The path with its parameters filled (a task id, a key id, an asset name)."""
    return re.sub(r"\{[^}]+\}", lambda m: "0123456789abcdef" if m.group(0) == "{key_id}" else str(uuid.uuid4()), path)


def call(api_url: str, method: str, path: str, token: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {} if method in ("POST", "PUT", "PATCH") else None
    return requests.request(method, f"{api_url}{concrete(path)}", json=body, headers=headers, timeout=10)


def test_every_route_needs_a_scope_or_says_it_is_public():
    undeclared = [route_id(case) for case in ROUTES if not scopes.required_scope_of(case[1])
                  and not scopes.is_public(case[1])]
    assert not undeclared, (f"routes without a scope: {undeclared}; give each `**scopes.needs(<scope>)` (or "
                            f"`**scopes.public()` for probes and docs) in its add_api_route")
    assert len(SCOPED) >= 8 and len(PUBLIC) >= 8  # the app's routes were found at all


def test_the_check_finds_a_route_that_declares_nothing():
    router = APIRouter()
    router.add_api_route("/v1/new", lambda: None, methods=["GET"])
    router.add_api_route("/v1/scoped", lambda: None, methods=["GET"], **scopes.needs(scopes.TASKS_READ))
    bare, scoped = router.routes
    assert scopes.required_scope_of(bare) is None and not scopes.is_public(bare)
    assert scopes.required_scope_of(scoped) == scopes.TASKS_READ


@pytest.mark.parametrize("case", SCOPED, ids=route_id)
def test_a_credential_without_the_route_s_scope_is_refused_403(api_url, platform, case):
    method, route = case
    needed = scopes.required_scope_of(route)
    others = tuple(s for s in scopes.ALL if s != needed)
    response = call(api_url, method, route.path, platform.token(f"tenant-{uuid.uuid4().hex[:8]}", scopes=others))
    assert_error(response, 403, "forbidden")
    assert repr(needed) in response.json()["message"], response.text


@pytest.mark.parametrize("case", SCOPED, ids=route_id)
def test_a_credential_with_only_the_route_s_scope_gets_past_the_check(api_url, platform, case):
    method, route = case
    token = platform.token(f"tenant-{uuid.uuid4().hex[:8]}", scopes=(scopes.required_scope_of(route),))
    response = call(api_url, method, route.path, token)
    assert response.status_code not in (401, 403), response.text
    assert response.status_code < 500, response.text


@pytest.mark.parametrize("case", PUBLIC, ids=route_id)
def test_a_public_route_takes_no_credential(api_url, case):
    method, route = case
    assert call(api_url, method, route.path).status_code not in (401, 403)


def test_every_scoped_operation_says_its_scope_in_the_openapi(api_url):
    doc = requests.get(f"{api_url}/openapi.json", timeout=10).json()
    for method, route in SCOPED:
        operation = doc["paths"][route.path][method.lower()]
        assert operation[scopes.REQUIRED_SCOPE] == scopes.required_scope_of(route)
        assert "403" in operation["responses"], f"{method} {route.path} does not document 403"


def test_a_jwt_without_a_scope_claim_has_every_scope(api_url, platform):
    """Tokens minted before scopes existed keep working, admin routes included."""
    token = platform.token(f"tenant-{uuid.uuid4().hex[:8]}")
    assert call(api_url, "GET", "/v1/tasks", token).status_code == 200
    assert call(api_url, "GET", "/v1/api-keys", token).status_code == 200


def test_a_jwt_with_an_empty_scope_claim_has_none(api_url, platform):
    key = platform.jwt_key
    token = sign_hs256(key, claims(scope=""), {"alg": "HS256", "kid": auth.legacy_kid(key)})
    assert_error(call(api_url, "GET", "/v1/tasks", token), 403, "forbidden")


@pytest.mark.parametrize("scope", [["tasks:read"], 7, "tasks:read tasks:everything"], ids=["list", "number", "unknown"])
def test_a_jwt_scope_claim_that_is_not_known_scope_names_is_401(api_url, platform, scope):
    key = platform.jwt_key
    token = sign_hs256(key, claims(scope=scope), {"alg": "HS256", "kid": auth.legacy_kid(key)})
    response = call(api_url, "GET", "/v1/tasks", token)
    assert_error(response, 401, "unauthorized")
    assert "scope" in response.json()["message"]
