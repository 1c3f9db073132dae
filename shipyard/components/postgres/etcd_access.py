"""Patroni's least-privilege access to etcd: a user whose one role may
read and write the keys under the cluster's prefix (patroni.key_prefix) and nothing else, and
etcd's authentication switched on so that an anonymous client may do nothing.

Through etcd's v3 JSON gateway (the API Patroni itself speaks), idempotent: a second run with
auth on logs in as root, finds everything in place and sets the passwords again. Passwords go in
request bodies only, never on a command line or in a message.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import requests

from shipyard.components.postgres import patroni

ROOT_USER = "root"  # etcd's own superuser: its root role is what `auth enable` requires
TIMEOUT_S = 10


class EtcdAccessError(RuntimeError):
    pass


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def prefix_range(prefix: str) -> tuple[str, str]:
    """etcd's [key, range_end) of every key starting with ``prefix`` (its last byte + 1)."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


@dataclass
class Gateway:
    """One etcd endpoint (``http://host:port``) spoken to as a user, once logged in."""

    endpoint: str
    token: str | None = None
    # One connection for the gateway's requests (each its own was a TCP handshake more).
    session: requests.Session = field(default_factory=requests.Session, repr=False)

    def call(self, method: str, body: dict, *, tolerate: tuple[str, ...] = ()) -> dict:
        """POST /v3/<method>; an error whose message contains one of ``tolerate`` counts as done."""
        headers = {"Authorization": self.token} if self.token else {}
        reply = self.session.post(f"{self.endpoint}/v3/{method}", json=body, headers=headers, timeout=TIMEOUT_S)
        doc = reply.json() if reply.content else {}
        if reply.ok:
            return doc
        message = doc.get("error") or doc.get("message") or reply.text
        if any(t in message for t in tolerate):
            return doc
        # The body is never echoed: it may hold a password.
        raise EtcdAccessError(f"etcd {self.endpoint}: /v3/{method} failed: {message}")

    def log_in(self, user: str, password: str) -> bool:
        """Whether etcd's auth is on (then this gateway carries the user's token from now on)."""
        reply = self.call("auth/authenticate", {"name": user, "password": password},
                          tolerate=("authentication is not enabled",))
        self.token = reply.get("token")
        return self.token is not None


def _user(gateway: Gateway, name: str, password: str, role: str) -> None:
    """The user with ``password`` and ``role``. etcd hashes a password it is sent (bcrypt,
    ~0.1 s of the member's CPU) before it finds the user exists: asked first, and the role's
    grant (a raft write) only when the user lacks it."""
    found = gateway.call("auth/user/get", {"name": name}, tolerate=("user name not found",))
    if "header" not in found:  # the error's body: no such user yet
        gateway.call("auth/user/add", {"name": name, "password": password}, tolerate=("user name already exists",))
    gateway.call("auth/user/changepw", {"name": name, "password": password})
    if role not in (found.get("roles") or []):
        gateway.call("auth/role/add", {"name": role}, tolerate=("role name already exists",))
        gateway.call("auth/user/grant", {"user": name, "role": role})


def grant_patroni(endpoint: str, env: str, root_password: str, patroni_password: str) -> None:
    """Make (or refresh) Patroni's user and role on the etcd cluster behind ``endpoint`` and
    switch authentication on."""
    gateway = Gateway(endpoint)
    if not gateway.log_in(ROOT_USER, root_password):
        # First run: the root user first (auth on requires it). Later runs leave it alone: a
        # changed password would revoke the token this run holds.
        _user(gateway, ROOT_USER, root_password, "root")
    _user(gateway, patroni.ETCD_USER, patroni_password, patroni.ETCD_ROLE)
    key, range_end = prefix_range(patroni.key_prefix(env))
    gateway.call("auth/role/grant", {"name": patroni.ETCD_ROLE,
                                     "perm": {"permType": "READWRITE", "key": _b64(key), "range_end": _b64(range_end)}})
    gateway.call("auth/enable", {})
