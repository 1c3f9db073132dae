"""Bearer tokens: HS256 JWTs whose key is chosen by ``kid`` from a key set, with the issuer and
audience checked. The key set is the secret ``jwt_signing_key``, read again when it changes, so a
new key is added and an old one retired without a restart and without logging anyone out.

The secret holds either a key set, JSON ``{"keys": [{"kid": "2026-11", "k": "<secret>"}, ...]}``
(the first key is the one to sign new tokens with; the others are still accepted), or — as
deployments made before key sets hold it — a plain key, which is a set of one key whose kid is
``legacy_kid(key)``; a token without a ``kid`` is accepted only while the set has one key.

A token's ``scope`` claim (space-separated names, ``scopes``) says what it may do. A token
without one has every scope: tokens minted before scopes existed (machine identities, the
release's smoke test) keep working; ``taskplatform token`` always writes the claim.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from dataclasses import dataclass

import jwt

from taskplatform import scopes
from taskplatform.errors import ApiError
from taskplatform.secrets import SecretError, SecretSource
from taskplatform.storable import unstorable_text

log = logging.getLogger("taskplatform.auth")

SECRET_NAME = "jwt_signing_key"
ALGORITHM = "HS256"
TENANT_MAX_LENGTH = 200


class KeySetError(ValueError):
    """The key set secret is not in a format this module reads (the message names what)."""


def legacy_kid(key: str) -> str:
    """The kid of a plain key: derived from it, so every reader agrees without configuration."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class KeySet:
    keys: dict[str, str]  # kid -> key, in the file's order: the first one signs
    signing_kid: str

    @classmethod
    def parse(cls, text: str) -> KeySet:
        text = text.strip()
        if not text.startswith("{"):
            if not text:
                raise KeySetError("the key set is empty")
            return cls({legacy_kid(text): text}, legacy_kid(text))
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeySetError(f"not JSON: {exc.msg} at line {exc.lineno}") from None
        entries = doc.get("keys") if isinstance(doc, dict) else None
        if not isinstance(entries, list) or not entries:
            raise KeySetError('expected {"keys": [{"kid": ..., "k": ...}, ...]} with at least one key')
        keys: dict[str, str] = {}
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not all(isinstance(entry.get(f), str) and entry.get(f)
                                                       for f in ("kid", "k")):
                raise KeySetError(f"keys[{i}]: expected {{\"kid\": <non-empty string>, \"k\": <non-empty string>}}")
            if entry["kid"] in keys:
                raise KeySetError(f"keys[{i}]: kid {entry['kid']!r} appears twice")
            keys[entry["kid"]] = entry["k"]
        return cls(keys, next(iter(keys)))

    def key_for(self, kid: str | None) -> str | None:
        if kid is None:  # a token from before key sets: unambiguous only with a single key
            return next(iter(self.keys.values())) if len(self.keys) == 1 else None
        return self.keys.get(kid)

    def issue(self, subject: str, issuer: str, audience: str, ttl_seconds: float = 3600,
              scope_names: tuple[str, ...] | None = None) -> str:
        """A token signed with the signing key (for tests, benchmarks and tools: the API only
        verifies); ``scope_names`` None writes no ``scope`` claim (every scope)."""
        now = int(time.time())
        claims = {"sub": subject, "iss": issuer, "aud": audience, "iat": now, "exp": now + int(ttl_seconds)}
        if scope_names is not None:
            claims["scope"] = scopes.scope_claim(scopes.parse_scopes(list(scope_names)))
        return jwt.encode(claims, self.keys[self.signing_kid], algorithm=ALGORITHM, headers={"kid": self.signing_kid})


class LiveKeySet:
    """The key set of a secret source, read again at most every ``refresh_seconds``: the file may
    change under a running process (a rotation). An unreadable or invalid new version is logged
    and the one before stays, so a half-written file never logs everyone out."""

    def __init__(self, secrets: SecretSource, refresh_seconds: float = 1.0):
        self.secrets, self.refresh_seconds = secrets, refresh_seconds
        self._text = secrets.get(SECRET_NAME)
        self._keys = KeySet.parse(self._text)  # at start, a broken key set is fatal
        self._checked = time.monotonic()

    def current(self) -> KeySet:
        now = time.monotonic()
        if now - self._checked >= self.refresh_seconds:
            self._checked = now
            self._reload()
        return self._keys

    def _reload(self) -> None:
        try:
            text = self.secrets.get(SECRET_NAME)
            if text != self._text:
                self._keys = KeySet.parse(text)
                self._text = text
                log.info("JWT key set reloaded", extra={"kids": sorted(self._keys.keys)})
        except (SecretError, KeySetError) as exc:
            log.error("JWT key set not reloaded; keeping the current one", extra={"reason": str(exc)})


# What a client is told: our words, never the library's text (it may change, and it can echo
# the token's content).
_REASONS = (
    (jwt.ExpiredSignatureError, "the token has expired; get a new one"),
    (jwt.ImmatureSignatureError, "the token is not valid yet (nbf or iat in the future)"),
    (jwt.InvalidIssuerError, "the token was issued by another issuer than this API trusts"),
    (jwt.InvalidAudienceError, "the token is meant for another audience than this API"),
    (jwt.MissingRequiredClaimError, "the token lacks a required claim (sub, exp, iss, aud)"),
    (jwt.InvalidSignatureError, "the token's signature does not match its key"),
    (jwt.InvalidAlgorithmError, f"the token is not signed with {ALGORITHM}"),
)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})


TOKEN_MAX_LENGTH = 8192
# Verified tokens, by their full text (signature included, so nothing can be forged into a hit):
# a client sends the same token for many requests, and verifying it is most of a request's
# CPU. A hit is still checked against its ``exp``; a changed key set empties the cache.
VERIFIED_CACHE_SIZE = 4096


def _kid(token: str) -> object:
    """The ``kid`` of the token's header, read without verifying (to choose the key)."""
    head = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, RecursionError):  # binascii.Error, UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise unauthorized("the token is malformed") from None
    if not isinstance(header, dict):
        raise unauthorized("the token is malformed")
    return header.get("kid")


class Authenticator:
    def __init__(self, keys: LiveKeySet, issuer: str, audience: str):
        self.keys, self.issuer, self.audience = keys, issuer, audience
        self._verified: dict[str, tuple[scopes.Principal, float]] = {}  # token -> (principal, exp)
        self._verified_with: KeySet | None = None

    def principal(self, token: str) -> scopes.Principal:
        """The tenant (``sub``) and scopes of a valid JWT, else ``ApiError`` 401."""
        keys = self.keys.current()
        if keys is not self._verified_with:
            self._verified.clear()
            self._verified_with = keys
        if (hit := self._verified.get(token)) is not None and time.time() < hit[1]:
            return hit[0]
        principal, expires = self._verify(token, keys)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (principal, expires)
        return principal

    def _verify(self, token: str, keys: KeySet) -> tuple[scopes.Principal, float]:
        if len(token) > TOKEN_MAX_LENGTH:
            raise unauthorized(f"the token is longer than {TOKEN_MAX_LENGTH} characters")
        kid = _kid(token)
        key = keys.key_for(kid) if kid is None or isinstance(kid, str) else None
        if key is None:
            raise unauthorized("the token's key (kid) is not one this API accepts")
        try:
            claims = jwt.decode(token, key, algorithms=[ALGORITHM], issuer=self.issuer, audience=self.audience,
                                options={"require": ["sub", "exp", "iss", "aud"]})
        except jwt.PyJWTError as exc:
            reason = next((text for kind, text in _REASONS if isinstance(exc, kind)), "the token is malformed")
            raise unauthorized(reason) from None
        subject = claims["sub"]
        # The tenant is stored as text: it must be text PostgreSQL takes (no NUL, no lone surrogate).
        if not isinstance(subject, str) or not 0 < len(subject) <= TENANT_MAX_LENGTH or unstorable_text(subject):
            raise unauthorized(f"the token's subject must be a tenant name of 1 to {TENANT_MAX_LENGTH} characters")
        return scopes.Principal(subject, _scopes_of(claims), "jwt"), claims["exp"]


def _scopes_of(claims: dict) -> frozenset[str]:
    """The token's ``scope`` claim as a set; absent: every scope (tokens from before scopes)."""
    if "scope" not in claims:
        return frozenset(scopes.ALL)
    claim = claims["scope"]
    if not isinstance(claim, str):
        raise unauthorized("the token's scope claim must be a string of space-separated scope names")
    try:
        return scopes.parse_scopes(claim.split())
    except scopes.ScopeError as exc:
        raise unauthorized(f"the token's scope claim: {exc}") from None
