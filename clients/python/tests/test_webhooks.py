"""``shipyard_tasks.webhooks.verify`` against deliveries signed by the platform's own code
(``taskplatform.webhooks``, as the workers sign them): accepted as sent, refused when the body,
the secret or the header is changed, or the timestamp is outside the tolerance. No server."""

from __future__ import annotations

import pytest

from shipyard_tasks.webhooks import WebhookSignatureError, verify
from taskplatform import webhooks

SECRET = webhooks.new_secret()
BODY = webhooks.event_body("7d1c0c53-6a0e-4bb0-9a43-0b0b4c1a2f10", "task.succeeded", "2026-12-05T06:00:00+00:00",
                           {"id": "0b6f1c8e-6d0e-4f4e-9d55-6a2b9b3c1a10", "status": "succeeded", "result": {"x": 1}})
NOW = 1_796_000_000


def header(secret: str = SECRET, body: bytes = BODY, at: int = NOW) -> str:
    return webhooks.signed_headers(secret, "id", "task.succeeded", body, now=at)[webhooks.SIGNATURE_HEADER]


def test_a_delivery_signed_by_the_platform_is_accepted_and_parsed():
    event = verify(BODY, header(), SECRET, now=NOW + 10)
    assert event["type"] == "task.succeeded" and event["data"]["task"]["result"] == {"x": 1}


@pytest.mark.parametrize("body, secret", [(BODY.replace(b'"x":1', b'"x":2'), SECRET), (BODY, webhooks.new_secret())],
                         ids=["body changed", "another secret"])
def test_a_changed_body_or_another_secret_is_refused(body, secret):
    with pytest.raises(WebhookSignatureError, match="does not match"):
        verify(body, header(), secret, now=NOW)


@pytest.mark.parametrize("offset", [-301, 301])
def test_a_timestamp_outside_the_tolerance_is_refused(offset):
    with pytest.raises(WebhookSignatureError, match="tolerated"):
        verify(BODY, header(at=NOW + offset), SECRET, now=NOW)
    assert verify(BODY, header(at=NOW + offset), SECRET, now=NOW, tolerance_seconds=600)


def test_a_timestamp_changed_in_the_header_breaks_the_signature():
    tampered = header().replace(f"t={NOW}", f"t={NOW + 100}")
    with pytest.raises(WebhookSignatureError, match="does not match"):
        verify(BODY, tampered, SECRET, now=NOW + 100)


@pytest.mark.parametrize("bad", ["", "v1=abc", f"t={NOW}", "t=soon,v1=abc"])
def test_a_malformed_header_is_refused(bad):
    with pytest.raises(WebhookSignatureError):
        verify(BODY, bad, SECRET, now=NOW)


def test_after_a_rotation_a_header_with_both_signatures_verifies_with_either_secret():
    """The platform signs with the new secret and, during the overlap, the old one too."""
    new = webhooks.new_secret()
    signed = webhooks.signed_headers([new, SECRET], "id", "task.succeeded", BODY, now=NOW)[webhooks.SIGNATURE_HEADER]
    assert signed.count("v1=") == 2
    assert verify(BODY, signed, new, now=NOW)["type"] == "task.succeeded"
    assert verify(BODY, signed, SECRET, now=NOW)
    with pytest.raises(WebhookSignatureError, match="does not match"):
        verify(BODY, signed, webhooks.new_secret(), now=NOW)


def test_a_receiver_switching_secrets_may_pass_both_of_its_own():
    old_only = header()  # signed before the rotation, or after the overlap with the old secret only
    assert verify(BODY, old_only, [webhooks.new_secret(), SECRET], now=NOW)
    with pytest.raises(WebhookSignatureError, match="does not match"):
        verify(BODY, old_only, [webhooks.new_secret(), webhooks.new_secret()], now=NOW)
    with pytest.raises(ValueError, match="needs a secret"):
        verify(BODY, old_only, [], now=NOW)
