"""What a credential may do: its scopes, and the one scope each route needs.

A credential (a JWT or an API key, ``auth`` and ``api_keys``) resolves to a ``Principal``: its
tenant and its scopes. Every route of the API declares in its route table either the scope it
needs (``needs``) or that it is public (``public``); ``tests/test_scopes.py`` walks the app's
routes and fails on one that declares neither, so a new route cannot be left open by mistake.

``admin`` manages the tenant's API keys and implies no other scope: each route needs exactly
one, and a credential lacking it is refused ``403 forbidden`` whatever else it holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, Request

from taskplatform.errors import ApiError

TASKS_READ, TASKS_WRITE, SCHEDULES_WRITE, WEBHOOKS_WRITE, ADMIN = (
    "tasks:read", "tasks:write", "schedules:write", "webhooks:write", "admin")
ALL = (TASKS_READ, TASKS_WRITE, SCHEDULES_WRITE, WEBHOOKS_WRITE, ADMIN)

# The route table's mark, also in the OpenAPI (each operation says what it needs).
REQUIRED_SCOPE = "x-required-scope"
PUBLIC = "x-public"


class ScopeError(ValueError):
    """Scope names this API does not know (the message names them and the known ones)."""


@dataclass(frozen=True)
class Principal:
    tenant: str
    scopes: frozenset[str]
    credential: str  # "jwt" or "api_key:<id>": for the access log, never a secret


def parse_scopes(names: list[str]) -> frozenset[str]:
    """Known scope names as a set; unknown ones are an error that names them."""
    unknown = sorted(set(names) - set(ALL))
    if unknown:
        raise ScopeError(f"unknown scope(s) {', '.join(map(repr, unknown))}; known: {', '.join(ALL)}")
    return frozenset(names)


def scope_claim(scopes: frozenset[str] | tuple[str, ...]) -> str:
    """A JWT's ``scope`` claim: space-separated names, as OAuth 2 (RFC 6749 §3.3) writes them."""
    return " ".join(sorted(scopes))


def require(principal: Principal, scope: str) -> None:
    if scope not in principal.scopes:
        held = ", ".join(sorted(principal.scopes)) or "none"
        raise ApiError(403, "forbidden", f"this operation needs scope {scope!r}; the credential has: {held}. "
                                         f"Use a credential with {scope!r} (an API key or token issued with it)")


def needs(scope: str) -> dict:
    """``add_api_route`` keywords of a route that needs ``scope``: the check as a route
    dependency (after authentication, before the rate limit and the handler) and the mark in
    the OpenAPI."""
    from taskplatform.deps import principal_of  # deps imports this module's types

    async def check_scope(request: Request, principal: Principal = Depends(principal_of)) -> None:
        require(principal, scope)

    check_scope.required_scope = scope  # what the scope test reads from the route's dependencies
    return {"dependencies": [Depends(check_scope)], "openapi_extra": {REQUIRED_SCOPE: scope}}


def public() -> dict:
    """``add_api_route`` keywords of a route that takes no credential (probes, scrapers, docs)."""
    return {"openapi_extra": {PUBLIC: True}}


def required_scope_of(route) -> str | None:
    """The scope a route's table entry says it needs (None: it declares none)."""
    for dependency in route.dependencies:
        scope = getattr(dependency.dependency, "required_scope", None)
        if scope is not None:
            return scope
    return None


def is_public(route) -> bool:
    return bool((route.openapi_extra or {}).get(PUBLIC))
