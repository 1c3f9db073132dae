"""A tenant's API keys (``/v1/api-keys``): create (the key is in this answer only), list, revoke.
Each needs the ``admin`` scope; a key is a credential of the tenant whose admin made it
(``taskplatform.api_keys``)."""

from __future__ import annotations

import datetime as dt
import re

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from taskplatform import api_keys
from taskplatform.deps import Caller, RateLimitedTenant, services_of
from taskplatform.errors import TENANT, ApiError, documented
from taskplatform.responses import ApiKey, ApiKeyList, CreatedApiKey, answer
from taskplatform.scopes import ADMIN, ALL, needs
from taskplatform.storable import unstorable_text

# A year: a longer-lived credential should be a machine identity's JWT, rotated with its key set.
MAX_TTL_SECONDS = 366 * 86400
_KEY_ID = re.compile(r"[0-9a-f]{16}")


class CreateApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"name": "ci-deployer", "scopes": ["tasks:read", "tasks:write"], "expires_in_seconds": 2592000}]})

    # The pattern only documents what _storable checks (PostgreSQL text holds no NUL): the OpenAPI
    # promises no more than the API accepts.
    name: str = Field(min_length=1, max_length=api_keys.NAME_MAX_LENGTH, description="what the key is for",
                      json_schema_extra={"pattern": "^[^\\x00]*$"})
    scopes: list[str] = Field(min_length=1, json_schema_extra={"items": {"enum": list(ALL)}},
                              description=f"what the key may do: any of {', '.join(ALL)}")
    expires_in_seconds: int | None = Field(None, ge=60, le=MAX_TTL_SECONDS,
                                           description="the key stops working this long after its creation; "
                                                       "none: it works until revoked")

    @field_validator("name")
    @classmethod
    def _storable(cls, name: str) -> str:
        if problem := unstorable_text(name):
            raise ValueError(problem)
        return name

    @field_validator("scopes")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = sorted(set(names) - set(ALL))
        if unknown:
            raise ValueError(f"unknown scope(s) {unknown}; known: {list(ALL)}")
        return names


async def create_key(request: Request, body: CreateApiKey, tenant_id: RateLimitedTenant, caller: Caller):
    expires_at = None
    if body.expires_in_seconds is not None:
        expires_at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=body.expires_in_seconds)
    record, key = await services_of(request).api_key_store.create(tenant_id, body.name, frozenset(body.scopes),
                                                                  expires_at, caller.credential)
    # The one time the key is shown: only its hash is kept.
    return JSONResponse({**record, "key": key}, status_code=201, headers={"Cache-Control": "no-store"})


async def list_keys(request: Request, tenant_id: RateLimitedTenant):
    return {"items": await services_of(request).api_key_store.list(tenant_id)}


async def revoke_key(request: Request, key_id: str, tenant_id: RateLimitedTenant):
    services = services_of(request)
    record = await services.api_key_store.revoke(tenant_id, key_id) if _KEY_ID.fullmatch(key_id) else None
    if record is None:
        raise ApiError(404, "not_found", "no such API key")
    services.api_keys.forget(key_id)
    return record


def add_routes(routes: APIRouter) -> None:
    """The API key routes, in the order the OpenAPI lists them."""
    routes.add_api_route("/v1/api-keys", create_key, methods=["POST"], status_code=201,
                         responses={**answer(CreatedApiKey, 201,
                                             "The key, shown this once (`Cache-Control: no-store`)"),
                                    **documented(*TENANT, 413)}, **needs(ADMIN))
    routes.add_api_route("/v1/api-keys", list_keys, methods=["GET"],
                         responses={**answer(ApiKeyList, 200, "The tenant's keys, revoked ones included"),
                                    **documented(*TENANT)}, **needs(ADMIN))
    routes.add_api_route("/v1/api-keys/{key_id}", revoke_key, methods=["DELETE"],
                         responses={**answer(ApiKey, 200, "The key, revoked (revoking it again changes nothing)"),
                                    **documented(*TENANT, 404)}, **needs(ADMIN))
