"""Property-based: whatever JSON, cursor, filter, token, header or body size a client sends, the
API answers it, in the error shape when refused, and never with a server error. Against the
real API process."""

import base64
import decimal
import json
import math
import time
import urllib.parse

from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import SERVER_ERRORS, sign_hs256
from taskplatform import auth

# Any code point, lone surrogates and NUL included: json.dumps escapes them as \uXXXX.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | any_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=12)

# A query string is bytes: any UTF-8 text, and bytes that are not UTF-8 at all, percent-encoded.
query_values = (st.text(st.characters(codec="utf-8"), max_size=20).map(urllib.parse.quote)
                | st.binary(max_size=20).map(urllib.parse.quote_from_bytes))

# The tenant fixture is the same for every example on purpose: the properties hold per request.
examples = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def assert_answered(response) -> dict:
    assert response.status_code not in SERVER_ERRORS, response.text
    body = response.json()
    if response.status_code >= 400:
        assert set(body) == {"code", "message", "request_id"}, body
    return body


def storable(value) -> bool:
    """What PostgreSQL's jsonb can hold: no NaN/Infinity, no NUL, no lone surrogate."""
    for leaf in _leaves(value, keys=True):
        if isinstance(leaf, float) and not math.isfinite(leaf):
            return False
        if isinstance(leaf, str) and ("\x00" in leaf or any(0xD800 <= ord(c) <= 0xDFFF for c in leaf)):
            return False
    return True


def _leaves(value, keys=False):
    if isinstance(value, dict):
        for key, child in value.items():
            if keys:
                yield key
            yield from _leaves(child, keys)
    elif isinstance(value, list):
        for child in value:
            yield from _leaves(child, keys)
    else:
        yield value


@examples
@given(payload=st.dictionaries(any_text, json_values, max_size=5))
def test_any_json_payload_is_accepted_as_sent_or_refused_with_422(tenant, payload):
    body = json.dumps({"kind": "checksum", "payload": payload})  # allow_nan: NaN and Infinity go out as such
    response = tenant.session.post(f"{tenant.base}/v1/tasks", data=body.encode(), timeout=10,
                                   headers={"Content-Type": "application/json"})
    answer = assert_answered(response)
    if storable(payload):
        assert response.status_code == 202, answer
        # jsonb keeps numbers as decimals (6.6e+16 comes back as 66000000000000000): the same
        # JSON value, compared as decimals.
        sent = json.loads(body, parse_float=decimal.Decimal)["payload"]
        assert json.loads(response.text, parse_float=decimal.Decimal)["payload"] == sent
        # The same body replayed under one key is the same request, whatever jsonb made of it.
        keyed, replayed = (tenant.session.post(f"{tenant.base}/v1/tasks", data=body.encode(), timeout=10,
                                               headers={"Content-Type": "application/json",
                                                        "Idempotency-Key": answer["id"]}) for _ in range(2))
        assert keyed.status_code == replayed.status_code == 202, replayed.text
        assert replayed.json()["id"] == keyed.json()["id"] and replayed.headers["idempotent-replayed"] == "true"
    else:
        assert response.status_code == 422 and answer["code"] == "invalid_request", answer


@examples
@given(body=json_values)
def test_any_json_body_gets_an_answer(tenant, body):
    response = tenant.session.post(f"{tenant.base}/v1/tasks", data=json.dumps(body).encode(), timeout=10,
                                   headers={"Content-Type": "application/json"})
    assert_answered(response)


@examples
@given(cursor=query_values
       | json_values.map(lambda v: urllib.parse.quote(base64.urlsafe_b64encode(json.dumps(v).encode()).decode()))
       | st.binary(max_size=40).map(lambda b: urllib.parse.quote(base64.urlsafe_b64encode(b).decode())))
def test_any_cursor_is_a_page_or_a_400(tenant, cursor):
    response = tenant.session.get(f"{tenant.base}/v1/tasks?cursor={cursor}", timeout=10)
    answer = assert_answered(response)
    assert response.status_code in (200, 400, 422), answer


@examples
@given(kind=query_values, status=st.sampled_from([None, "queued", "dead"]), limit=st.integers(-5, 600))
def test_any_filter_is_a_page_or_a_4xx(tenant, kind, status, limit):
    query = f"kind={kind}&limit={limit}" + (f"&status={status}" if status else "")
    response = tenant.session.get(f"{tenant.base}/v1/tasks?{query}", timeout=10)
    answer = assert_answered(response)
    if response.status_code == 200:
        sent = urllib.parse.parse_qs(f"kind={kind}", keep_blank_values=True)["kind"][0]
        assert all(task["kind"] == sent for task in answer["items"])


# Header values as HTTP carries them: visible ISO-8859-1 text (requests sends them as latin-1).
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
                        max_size=60).map(str.strip)
claim_values = st.none() | st.booleans() | st.integers(-2**40, 2**40) | any_text | st.lists(any_text, max_size=2)


@examples
@given(authorization=header_values | header_values.map(lambda v: f"Bearer {v}"))
def test_any_authorization_header_is_a_page_or_a_401(tenant, authorization):
    response = tenant.session.get(f"{tenant.base}/v1/tasks", headers={"Authorization": authorization}, timeout=10)
    answer = assert_answered(response)
    assert response.status_code == 401 and answer["code"] == "unauthorized", answer


@examples
@given(overrides=st.dictionaries(st.sampled_from(["sub", "iss", "aud", "exp", "nbf", "iat", "kid"]), claim_values,
                                 max_size=4))
def test_any_claims_signed_with_the_key_are_a_page_or_a_401(tenant, platform, overrides):
    """Only a token of the platform's key set, for its issuer and audience, with a tenant for
    a subject and in date, passes; anything else is a 401 — never a 500."""
    now = int(time.time())
    claims = {"sub": tenant.name, "iss": "shipyard", "aud": "taskplatform", "exp": now + 300}
    claims.update((k, v) for k, v in overrides.items() if k != "kid")
    header = {"alg": "HS256", "kid": overrides.get("kid", auth.legacy_kid(platform.jwt_key))}
    response = tenant.session.get(f"{tenant.base}/v1/tasks", timeout=10,
                                  headers={"Authorization": f"Bearer {sign_hs256(platform.jwt_key, claims, header)}"})
    answer = assert_answered(response)
    assert response.status_code in (200, 401), answer


@examples
@given(key=header_values, payload=st.dictionaries(st.sampled_from("ab"), st.integers(0, 2), max_size=2))
def test_any_idempotency_key_is_a_task_or_a_4xx(tenant, key, payload):
    response = tenant.session.post(f"{tenant.base}/v1/tasks", json={"kind": "checksum", "payload": payload},
                                   headers={"Idempotency-Key": key}, timeout=10)
    answer = assert_answered(response)
    assert response.status_code in (202, 409, 422), answer


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(0, 3 * 65_536))
def test_any_body_size_is_a_task_or_a_413(tenant, size):
    body = json.dumps({"kind": "checksum", "payload": {"blob": "x" * size}}).encode()
    response = tenant.session.post(f"{tenant.base}/v1/tasks", data=body, timeout=10,
                                   headers={"Content-Type": "application/json"})
    answer = assert_answered(response)
    assert response.status_code == (202 if len(body) <= 65_536 else 413), answer
