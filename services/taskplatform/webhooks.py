"""Webhooks, the pure part: which events there are, the body a receiver gets, its signature,
which addresses a delivery may go to (the SSRF guard), when a failed delivery is tried again,
and the HTTP request itself. Nothing here touches PostgreSQL; the API (``routes/webhooks``) and
the workers' dispatcher (``webhook_dispatch``) share it.

**Signature.** Each delivery carries ``Shipyard-Signature: t=<unix seconds>,v1=<hex>`` where
``<hex>`` is HMAC-SHA256, keyed with the subscription's secret, of ``"<t>." + body`` (after a
rotation, one ``v1=`` per secret still signing: the new one first, then the old one until its
overlap ends; a task's ``callback_url`` is signed with its tenant's callback secret), and
``Shipyard-Event-Id``: the event's id, the same on every retry and redelivery (a receiver keeps
the ids it has handled and drops a repeat: deliveries are at least once). A receiver checks the
HMAC in constant time and that ``t`` is recent (five minutes by default), so a captured delivery
cannot be replayed later (``shipyard_tasks.webhooks.verify`` does both).

**Addresses (SSRF).** A receiver's host is resolved and *every* address it resolves to must be
public: none loopback, private, link-local (cloud metadata at 169.254.169.254), multicast,
reserved, unspecified, shared (100.64/10) or IPv4-mapped/6to4 forms of them; otherwise the URL is
refused, at creation and again at each delivery (the DNS may change in between). The delivery
then connects to the address that was checked, not to the name (a second lookup could answer
something else: DNS rebinding); the name still goes in ``Host`` and, over TLS, in SNI and the
certificate check. Redirects are not followed (one could point anywhere). An environment whose
receivers are on its own network turns the guard off with ``webhook_allow_private_addresses``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import random
import secrets
import socket
import ssl
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

EVENTS = ("task.succeeded", "task.failed", "task.dead", "task.cancelled")
SIGNATURE_HEADER = "Shipyard-Signature"
EVENT_ID_HEADER = "Shipyard-Event-Id"
EVENT_TYPE_HEADER = "Shipyard-Event-Type"
SECRET_PREFIX = "whsec_"
URL_MAX_LENGTH = 2000
USER_AGENT = "Shipyard-Webhooks/1"


class UrlRefused(ValueError):
    """A receiver URL the platform will not send to; the message says why and what to do."""


def new_secret() -> str:
    """A subscription's signing secret: 256 random bits."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secrets: str | Sequence[str], timestamp: int, body: bytes) -> str:
    """The ``Shipyard-Signature`` header's value for ``body`` sent at ``timestamp``: one ``v1=``
    per secret, the current one first (a rotated-out secret signs too during its overlap, so a
    receiver that still holds it keeps accepting; Stripe's scheme)."""
    signed = f"{timestamp}.".encode() + body
    digests = [hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
               for secret in ([secrets] if isinstance(secrets, str) else secrets)]
    return ",".join([f"t={timestamp}", *(f"v1={digest}" for digest in digests)])


def event_body(event_id: str, event_type: str, created_at: str, task: dict) -> bytes:
    """What a receiver gets: the same bytes on every attempt of one event (keys sorted)."""
    doc = {"id": event_id, "type": event_type, "created_at": created_at, "data": {"task": task}}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def retry_delay(attempt: int, base: float, cap: float, rng: random.Random = random.Random()) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base · 2^(attempt−1))].
    Full, not the tasks' half jitter: after a receiver's outage every pending delivery of every
    subscription to it fails together, and full jitter spreads their retries the widest."""
    return rng.uniform(0, min(cap, base * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class Target:
    """A receiver URL, parsed: where to connect, and what to say in the request line and Host."""
    scheme: str
    host: str  # as in the URL (an IPv6 literal without brackets)
    port: int
    path: str  # path and query, what the request line names
    host_header: str


def parse_url(url: str) -> Target:
    """An absolute http(s) URL with a host, no user info and no fragment."""
    if len(url) > URL_MAX_LENGTH:
        raise UrlRefused(f"the URL is longer than {URL_MAX_LENGTH} characters")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise UrlRefused("the URL holds spaces or control characters; percent-encode them")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("the URL must start with https:// (or http://)")
    if not parts.hostname:
        raise UrlRefused("the URL has no host, e.g. https://hooks.example.com/shipyard")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("credentials in the URL (user:password@) are not sent; put a token in the path or query")
    if parts.fragment:
        raise UrlRefused("a URL fragment (#...) is never sent to a server; leave it out")
    default = 443 if parts.scheme == "https" else 80
    host = parts.hostname
    netloc_host = f"[{host}]" if ":" in host else host
    return Target(parts.scheme, host, port or default, (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                  netloc_host if port in (None, default) else f"{netloc_host}:{port}")


def address_problem(address: str) -> str | None:
    """Why a delivery may not go to ``address`` (an IP), or None when it is public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            return address_problem(str(embedded))
    for name in ("unspecified", "loopback", "link_local", "multicast", "reserved", "private"):
        if getattr(ip, f"is_{name}"):
            return name.replace("_", "-")
    if not ip.is_global:  # shared address space (100.64/10), documentation ranges, ...
        return "not globally routable"
    return None


def outside(address: str, networks: tuple[str, ...]) -> bool:
    """``address`` lies in none of ``networks`` (CIDRs; none given: no such limit)."""
    if not networks:
        return False
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return not any(ip in ipaddress.ip_network(net) for net in networks)


async def resolve(host: str, port: int, allow_private: bool, timeout: float,
                  allowed_networks: tuple[str, ...] = ()) -> list[str]:
    """The addresses ``host`` resolves to, each one checked (``address_problem``) unless
    ``allow_private``: a single private one refuses the URL (a name that resolves to a public
    and a private address could be made to reach the private one). With ``allowed_networks``
    (an environment that delivers only to its own receivers: CIDRs), every address must lie in one."""
    try:
        ipaddress.ip_address(host)
        addresses = [host]
    except ValueError:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as exc:
            raise UrlRefused(f"the host {host!r} does not resolve ({exc.__class__.__name__}: {exc})") from None
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        if not addresses:
            raise UrlRefused(f"the host {host!r} resolves to no address")
    for address in addresses:
        if outside(address, allowed_networks):
            shown = host if host == address else f"{host!r} resolves to {address}"
            raise UrlRefused(f"{shown}: outside the networks this environment delivers to "
                             f"(webhook_allowed_networks: {', '.join(allowed_networks)})")
    if not allow_private:
        for address in addresses:
            if problem := address_problem(address):
                shown = host if host == address else f"{host!r} resolves to {address}"
                raise UrlRefused(f"{shown}: a {problem} address; webhooks go to public addresses only "
                                 f"(an environment allows private ones with webhook_allow_private_addresses)")
    return addresses


async def check_url(url: str, allow_private: bool, timeout: float = 5.0, allowed_networks: tuple[str, ...] = ()) -> Target:
    """A subscription's URL, parsed and resolved now: what the API refuses at creation."""
    target = parse_url(url)
    await resolve(target.host, target.port, allow_private, timeout, allowed_networks)
    return target


@dataclass(frozen=True)
class Sent:
    status_code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def request_bytes(target: Target, headers: dict[str, str], body: bytes) -> bytes:
    """An HTTP/1.1 POST with ``Connection: close`` (one request per connection)."""
    lines = [f"POST {target.path} HTTP/1.1", f"Host: {target.host_header}", f"User-Agent: {USER_AGENT}",
             "Content-Type: application/json", f"Content-Length: {len(body)}", "Connection: close",
             *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def status_of(line: bytes) -> int:
    """The status code of an HTTP/1.x status line (``ValueError`` if it is not one)."""
    version, code, *_ = line.decode("latin-1").split(" ", 2)
    if not version.startswith("HTTP/1.") or len(code.strip()) != 3:
        raise ValueError(f"not an HTTP status line: {line[:80]!r}")
    return int(code)


async def post(url: str, headers: dict[str, str], body: bytes, allow_private: bool, timeout: float,
               tls: ssl.SSLContext | None = None, allowed_networks: tuple[str, ...] = ()) -> Sent:
    """One delivery attempt: resolve and check, connect to the first checked address, send, read
    the status line; all within ``timeout``. Never raises for the receiver's sake: what went
    wrong is the ``error`` (the delivery log shows it)."""
    try:
        async with asyncio.timeout(timeout):
            target = parse_url(url)
            addresses = await resolve(target.host, target.port, allow_private, timeout, allowed_networks)
            context = None
            if target.scheme == "https":
                context = tls or ssl.create_default_context()
            reader, writer = await _connect(addresses, target, context)
            try:
                writer.write(request_bytes(target, headers, body))
                await writer.drain()
                line = await reader.readline()
                return Sent(status_of(line), None)
            finally:
                writer.close()
    except UrlRefused as exc:
        return Sent(None, f"refused: {exc}")
    except TimeoutError:
        return Sent(None, f"timed out after {timeout:g} s (webhook_timeout_seconds)")
    except (OSError, ValueError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
        return Sent(None, f"{exc.__class__.__name__}: {exc}"[:500])


async def _connect(addresses: list[str], target: Target, context: ssl.SSLContext | None):
    """A connection to the first of the checked ``addresses`` that accepts one (a name may
    resolve to an IPv6 and an IPv4 address, and the receiver listen on one of them only)."""
    for address in addresses[:-1]:
        try:
            return await asyncio.open_connection(address, target.port, ssl=context,
                                                 server_hostname=target.host if context else None)
        except ConnectionError:
            continue
    return await asyncio.open_connection(addresses[-1], target.port, ssl=context,
                                         server_hostname=target.host if context else None)


def signed_headers(secrets: str | Sequence[str], event_id: str, event_type: str, body: bytes,
                   now: float | None = None) -> dict:
    timestamp = int(now if now is not None else time.time())
    return {EVENT_ID_HEADER: event_id, EVENT_TYPE_HEADER: event_type,
            SIGNATURE_HEADER: signature(secrets, timestamp, body)}
