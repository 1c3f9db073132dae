"""Checking a webhook delivery of the task platform, in the receiver: its ``Shipyard-Signature``
(HMAC-SHA256 with the subscription's secret over ``"<t>." + body``, compared in constant time)
and its timestamp (not older or newer than ``tolerance_seconds``: a captured delivery cannot be
replayed later). Deliveries are at least once: keep the ``Shipyard-Event-Id`` (the event's
``id``) of what you handled and drop a repeat.

After a rotation the platform signs with the new secret and, until the overlap ends, with the
old one too: the header then holds two ``v1=``, and a delivery is accepted when any of them
matches. A receiver switching secrets may pass both of its own (``[new, old]``) meanwhile.

    from shipyard_tasks.webhooks import verify, WebhookSignatureError

    event = verify(request.body, request.headers["Shipyard-Signature"], secret)  # raw bytes, as received
    if not seen(event["id"]): handle(event["type"], event["data"]["task"])
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any

from shipyard_tasks.errors import ShipyardError

SIGNATURE_HEADER = "Shipyard-Signature"
EVENT_ID_HEADER = "Shipyard-Event-Id"
DEFAULT_TOLERANCE_SECONDS = 300.0


class WebhookSignatureError(ShipyardError):
    """The delivery is not the platform's, was altered, or is too old or too new to trust."""


def _parse(header: str) -> tuple[int, list[str]]:
    timestamp, signatures = None, []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise WebhookSignatureError(f"{SIGNATURE_HEADER}: t is not a number") from None
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise WebhookSignatureError(f"{SIGNATURE_HEADER} must read t=<unix seconds>,v1=<hex>; got {header[:100]!r}")
    return timestamp, signatures


def verify(body: bytes, header: str, secret: str | Sequence[str], *,
           tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS, now: float | None = None) -> dict[str, Any]:
    """The event (``id``, ``type``, ``created_at``, ``data.task``) if one of the header's ``v1=``
    signs ``body`` with ``secret`` (or one of several secrets) within ``tolerance_seconds`` of
    ``now``; ``WebhookSignatureError`` otherwise. ``body`` must be the bytes as received: parsed
    and dumped again, it would not match."""
    timestamp, signatures = _parse(header)
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets:
        raise ValueError("verify needs a secret")
    signed = f"{timestamp}.".encode() + body
    expected = [hmac.new(key.encode(), signed, hashlib.sha256).hexdigest() for key in secrets]
    if not any(hmac.compare_digest(mine, candidate) for mine in expected for candidate in signatures):
        raise WebhookSignatureError("the signature does not match: another secret, or the body was changed")
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance_seconds:
        raise WebhookSignatureError(f"the delivery is signed {age:.0f} s from now, beyond the {tolerance_seconds:g} s "
                                    f"tolerated (a replay, or this host's clock is off)")
    return json.loads(body)
