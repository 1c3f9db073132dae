"""API keys: credentials a tenant's admin creates, lists and revokes through the API
(``routes/keys.py``), stored in PostgreSQL (migration 0005).

A key reads ``sy_<id>_<secret>``: ``sy_`` tells it from a JWT at a glance (and to secret
scanners), ``<id>`` (16 hex digits) names its row, ``<secret>`` is 32 random bytes. Only the
SHA-256 of the secret is stored, and the key is shown once, in the create's answer. A plain
hash suffices where passwords need a slow one: the secret is random with 256 bits, so a stolen
table gives no key by guessing.

Revocation bound: each API process keeps what it looked up for ``TASKS_API_KEY_CACHE_SECONDS``
(5) at most, so a revoked (or expired) key is refused by every process within that; the process
that revoked it forgets it at once. The expiry itself is checked at every request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

import asyncpg

from taskplatform import scopes
from taskplatform.auth import unauthorized

PREFIX = "sy_"
_KEY = re.compile(r"sy_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
# Lookups kept per process; a flood of made-up ids empties it rather than growing it.
CACHE_SIZE = 4096
NAME_MAX_LENGTH = 100


def looks_like_key(token: str) -> bool:
    """An API key, not a JWT (whose first part is base64url JSON, never ``sy_``)."""
    return token.startswith(PREFIX)


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def new_key() -> tuple[str, str, bytes]:
    """(id, the key as the client gets it, the hash to store)."""
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    return key_id, f"{PREFIX}{key_id}_{secret}", secret_hash(secret)


@dataclass(frozen=True)
class StoredKey:
    id: str
    tenant: str
    scopes: frozenset[str]
    secret_hash: bytes
    expires_at: dt.datetime | None
    revoked: bool


_PUBLIC_COLUMNS = "id, name, scopes, created_at, expires_at, revoked_at, created_by"


def key_json(row: asyncpg.Record) -> dict:
    """What the API says of a key: never its secret nor its hash."""
    doc = dict(row)
    for field in ("created_at", "expires_at", "revoked_at"):
        doc[field] = doc[field] and doc[field].isoformat()
    doc["scopes"] = sorted(doc["scopes"])
    return doc


class ApiKeyStore:
    """The ``api_keys`` table; every query names the tenant, so a tenant only sees its own."""

    def __init__(self, pool):
        self.pool = pool

    async def create(self, tenant: str, name: str, scope_names: frozenset[str], expires_at: dt.datetime | None,
                     created_by: str) -> tuple[dict, str]:
        """(the key's record, the key itself — to be shown once)."""
        key_id, key, digest = new_key()
        row = await self.pool.fetchrow(
            f"INSERT INTO api_keys (id, tenant, name, scopes, secret_hash, expires_at, created_by) "
            f"VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_PUBLIC_COLUMNS}",
            key_id, tenant, name, sorted(scope_names), digest, expires_at, created_by)
        return key_json(row), key

    async def list(self, tenant: str) -> list[dict]:
        rows = await self.pool.fetch(f"SELECT {_PUBLIC_COLUMNS} FROM api_keys WHERE tenant = $1 "
                                     f"ORDER BY created_at DESC, id", tenant)
        return [key_json(row) for row in rows]

    async def revoke(self, tenant: str, key_id: str) -> dict | None:
        """The key's record, revoked now (or when it was already); None: no such key of the tenant."""
        row = await self.pool.fetchrow(
            f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, clock_timestamp()) "
            f"WHERE tenant = $1 AND id = $2 RETURNING {_PUBLIC_COLUMNS}", tenant, key_id)
        return key_json(row) if row else None

    async def find(self, key_id: str) -> StoredKey | None:
        row = await self.pool.fetchrow("SELECT id, tenant, scopes, secret_hash, expires_at, revoked_at IS NOT NULL "
                                       "AS revoked FROM api_keys WHERE id = $1", key_id)
        if row is None:
            return None
        return StoredKey(row["id"], row["tenant"], frozenset(row["scopes"]), bytes(row["secret_hash"]),
                         row["expires_at"], row["revoked"])


class ApiKeyVerifier:
    """A bearer API key → its principal, from PostgreSQL through a per-process cache of
    ``cache_seconds`` (the revocation bound)."""

    def __init__(self, store: ApiKeyStore, cache_seconds: float):
        self.store, self.cache_seconds = store, cache_seconds
        self._cache: dict[str, tuple[StoredKey | None, float]] = {}  # id -> (row or None, looked up at)

    async def principal(self, token: str) -> scopes.Principal:
        match = _KEY.fullmatch(token)
        if match is None:
            raise unauthorized("the API key is malformed (expected sy_<16 hex digits>_<43 characters>)")
        key_id, secret = match.groups()
        stored = await self._lookup(key_id)
        # Compared in constant time; an unknown id and a wrong secret get the same answer.
        if stored is None or not hmac.compare_digest(stored.secret_hash, secret_hash(secret)):
            raise unauthorized("the API key is not one this API knows")
        if stored.revoked:
            raise unauthorized("the API key has been revoked; ask the tenant's admin for a new one")
        if stored.expires_at is not None and stored.expires_at <= dt.datetime.now(dt.timezone.utc):
            raise unauthorized("the API key has expired; ask the tenant's admin for a new one")
        return scopes.Principal(stored.tenant, stored.scopes, f"api_key:{stored.id}")

    async def _lookup(self, key_id: str) -> StoredKey | None:
        now = time.monotonic()
        hit = self._cache.get(key_id)
        if hit is not None and now - hit[1] < self.cache_seconds:
            return hit[0]
        stored = await self.store.find(key_id)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[key_id] = (stored, now)
        return stored

    def forget(self, key_id: str) -> None:
        """This process revoked it: no need to wait for the cache."""
        self._cache.pop(key_id, None)
