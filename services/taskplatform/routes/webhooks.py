"""A tenant's webhooks (``/v1/webhooks``): subscriptions (create — the signing secret is in this
answer only —, read, list, delete, rotate the secret), each one's deliveries with their log, and
redelivery by hand; and the deliveries to its tasks' ``callback_url``s (``/v1/callbacks``: the
tenant's callback secret, made or rotated, the deliveries and their redelivery). The workers send
the deliveries (``webhook_dispatch``); what is sent and how it is signed is in ``webhooks``.

**Rotation.** A new secret signs from the rotation on; the one it replaces signs too, as a second
``v1=`` of the same header, for ``overlap_seconds`` (a day unless said; at most a week), so a
receiver can switch to the new secret at its own pace within that window. A second rotation
within the window drops the oldest: two secrets sign at most.

Every route needs ``webhooks:write``, reading included: a subscription's URL is configuration
that often carries a credential of the receiver (a token in its path or query), and the delivery
log says where a tenant's task events go and how its receivers answer — more than a credential
made to read tasks (``tasks:read``) should learn. One scope also keeps the rule "each route
needs exactly one" without a scope for reading webhooks that nobody asked for yet."""

from __future__ import annotations

import asyncio
import uuid

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from taskplatform import webhooks
from taskplatform.api_services import Services
from taskplatform.cursors import decode_cursor, encode_cursor
from taskplatform.deps import RateLimitedTenant, services_of
from taskplatform.errors import TENANT, ApiError, documented
from taskplatform.responses import (CallbackSecret, CreatedWebhook, Delivery, DeliveryPage, Webhook, WebhookEvent,
                                    WebhookPage, answer, links_to)
from taskplatform.schemas import WholeSeconds
from taskplatform.scopes import WEBHOOKS_WRITE, needs
from taskplatform.storable import unstorable_text

# A name that does not resolve at once is refused rather than waited for: the request holds a
# slot of the API process meanwhile.
RESOLVE_TIMEOUT_SECONDS = 2.0
# How long a rotated-out secret still signs (``Rotation``): a day unless the request says, a week
# at most (a receiver that has not switched by then has a problem no longer window solves).
OVERLAP_SECONDS, MAX_OVERLAP_SECONDS = 86_400, 604_800


class CreateWebhook(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"url": "https://hooks.example.com/shipyard", "events": ["task.succeeded", "task.dead"],
                      "description": "billing"}]})

    url: str = Field(min_length=1, max_length=webhooks.URL_MAX_LENGTH, description=(
        "where deliveries are POSTed: http(s), a host that resolves to public addresses only (unless the "
        "environment allows private ones); checked again at each delivery"), json_schema_extra={"pattern": "^[^\\x00]*$"})
    events: list[WebhookEvent] = Field(min_length=1, description=(
        "the task events to deliver: `task.succeeded`, `task.failed` (an attempt failed, the task will be retried), "
        "`task.dead` (no attempts left), `task.cancelled`"))
    description: str = Field("", max_length=200, description="what the subscription is for",
                             json_schema_extra={"pattern": "^[^\\x00]*$"})

    @field_validator("url", "description")
    @classmethod
    def _storable(cls, text: str) -> str:
        if problem := unstorable_text(text):
            raise ValueError(problem)
        return text


class Rotation(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"overlap_seconds": 3600}]})

    overlap_seconds: WholeSeconds = Field(OVERLAP_SECONDS, ge=0, le=MAX_OVERLAP_SECONDS, description=(
        f"how long the secret replaced still signs too (a second `v1=`), {OVERLAP_SECONDS} (a day) unless given; "
        f"0: from now on only the new one"))


async def check_receiver(services: Services, url: str, field: str) -> None:
    """``url`` may receive deliveries now (``webhooks.check_url``: resolved, every address
    allowed); otherwise 400 ``url_not_allowed`` naming ``field`` and why."""
    config = services.config.config
    try:
        await webhooks.check_url(url, config.webhook_allow_private_addresses, RESOLVE_TIMEOUT_SECONDS,
                                 tuple(config.webhook_allowed_networks))
    except webhooks.UrlRefused as exc:
        raise ApiError(400, "url_not_allowed", f"{field}: {exc}") from None


async def check_callbacks(services: Services, tenant_id: str, urls: dict[str, str]) -> None:
    """Tasks' ``callback_url``s (the field naming each → its URL) may be created: each URL allowed
    (one that repeats is resolved once, the others at the same time) and the tenant has a
    callback secret to sign with (409 ``callback_secret_missing`` otherwise)."""
    if not urls:
        return
    first_field = {url: field for field, url in reversed(urls.items())}
    await asyncio.gather(*(check_receiver(services, url, field) for url, field in first_field.items()))
    if not await services.webhooks.has_callback_secret(tenant_id):
        raise ApiError(409, "callback_secret_missing", "a task with a callback_url needs the tenant's callback secret "
                                                       "to sign its deliveries: POST /v1/callbacks/secret first "
                                                       "(scope webhooks:write), keep the secret it answers")


def parse_id(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ApiError(404, "not_found", f"no such {what}") from None


async def create_webhook(request: Request, body: CreateWebhook, tenant_id: RateLimitedTenant):
    services = services_of(request)
    await check_receiver(services, body.url, "url")
    secret = webhooks.new_secret()
    created = await services.webhooks.create(tenant_id, body.url, body.events, body.description, secret)
    return _with_secret(created, secret, 201)


def _with_secret(answer: dict, secret: str, status: int) -> JSONResponse:
    """The one time a secret is shown (it is stored to sign with, never shown again)."""
    return JSONResponse({**answer, "secret": secret}, status_code=status, headers={"Cache-Control": "no-store"})


async def rotate_secret(request: Request, webhook_id: str, tenant_id: RateLimitedTenant,
                        body: Rotation | None = None):
    secret = webhooks.new_secret()
    rotated = await services_of(request).webhooks.rotate_secret(
        tenant_id, parse_id(webhook_id, "webhook"), secret, (body or Rotation()).overlap_seconds)
    if rotated is None:
        raise ApiError(404, "not_found", "no such webhook")
    return _with_secret(rotated, secret, 200)


async def set_callback_secret(request: Request, tenant_id: RateLimitedTenant, body: Rotation | None = None):
    secret = webhooks.new_secret()
    made = await services_of(request).webhooks.set_callback_secret(tenant_id, secret,
                                                                   (body or Rotation()).overlap_seconds)
    return _with_secret(made, secret, 200)


async def get_webhook(request: Request, webhook_id: str, tenant_id: RateLimitedTenant):
    found = await services_of(request).webhooks.get(tenant_id, parse_id(webhook_id, "webhook"))
    if found is None:
        raise ApiError(404, "not_found", "no such webhook")
    return found


def _page_size(page_size: int, what: str):
    return Query(min(50, page_size), ge=1, le=page_size,
                 description=f"{what} per page, at most {page_size} (TASKS_API_MAX_PAGE_SIZE)")


def list_webhooks_up_to(page_size: int):
    async def list_webhooks(request: Request, tenant_id: RateLimitedTenant,
                            limit: int = _page_size(page_size, "webhooks"), cursor: str | None = None):
        after = decode_cursor(cursor) if cursor else None
        items = await services_of(request).webhooks.list(tenant_id, limit + 1, after)
        return _page(items, limit)

    return list_webhooks


def list_deliveries_up_to(page_size: int):
    async def list_deliveries(request: Request, webhook_id: str, tenant_id: RateLimitedTenant,
                              limit: int = _page_size(page_size, "deliveries"), cursor: str | None = None):
        after = decode_cursor(cursor) if cursor else None
        items = await services_of(request).webhooks.deliveries(tenant_id, parse_id(webhook_id, "webhook"),
                                                               limit + 1, after)
        if items is None:
            raise ApiError(404, "not_found", "no such webhook")
        return _page(items, limit)

    return list_deliveries


def list_callback_deliveries_up_to(page_size: int):
    async def list_callback_deliveries(request: Request, tenant_id: RateLimitedTenant,
                                       limit: int = _page_size(page_size, "deliveries"), cursor: str | None = None):
        after = decode_cursor(cursor) if cursor else None
        return _page(await services_of(request).webhooks.callback_deliveries(tenant_id, limit + 1, after), limit)

    return list_callback_deliveries


def _page(items: list[dict], limit: int) -> dict:
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_cursor": encode_cursor(items[-1]) if more else None}


async def delete_webhook(request: Request, webhook_id: str, tenant_id: RateLimitedTenant):
    if not await services_of(request).webhooks.delete(tenant_id, parse_id(webhook_id, "webhook")):
        raise ApiError(404, "not_found", "no such webhook")
    return Response(status_code=204)


async def redeliver(request: Request, webhook_id: str, delivery_id: str, tenant_id: RateLimitedTenant):
    return await _redeliver(request, tenant_id, parse_id(webhook_id, "webhook"), delivery_id, "of this webhook")


async def redeliver_callback(request: Request, delivery_id: str, tenant_id: RateLimitedTenant):
    return await _redeliver(request, tenant_id, None, delivery_id, "to a callback_url of this tenant's tasks")


async def _redeliver(request: Request, tenant_id: str, subscription_id: uuid.UUID | None, delivery_id: str,
                     of_what: str):
    delivery, queued = await services_of(request).webhooks.redeliver(tenant_id, subscription_id,
                                                                      parse_id(delivery_id, "delivery"))
    if delivery is None:
        raise ApiError(404, "not_found", f"no such delivery {of_what}")
    if not queued:
        raise ApiError(409, "conflict", "the delivery is pending: it is tried again at its next_attempt_at; "
                                        "redeliver once it has succeeded or failed")
    return JSONResponse(delivery, status_code=202)


_SUBSCRIPTION_LINKS = links_to("webhook_id", "/id", GetWebhook="get_webhook", ListDeliveries="list_deliveries",
                               RotateSecret="rotate_webhook_secret", DeleteWebhook="delete_webhook")


def add_routes(routes: APIRouter, page_size: int) -> None:
    """The webhook and callback routes, in the order the OpenAPI lists them; ``page_size`` is
    TASKS_API_MAX_PAGE_SIZE. Every one needs ``webhooks:write`` (the module says why)."""
    scope = needs(WEBHOOKS_WRITE)
    routes.add_api_route("/v1/webhooks", create_webhook, methods=["POST"], status_code=201, operation_id="create_webhook",
                         responses={**answer(CreatedWebhook, 201, "The subscription with its signing secret, shown "
                                                                  "this once (`Cache-Control: no-store`)",
                                             _SUBSCRIPTION_LINKS),
                                    **documented(*TENANT, 400, 413)}, **scope)
    routes.add_api_route("/v1/webhooks/{webhook_id}", get_webhook, methods=["GET"], operation_id="get_webhook",
                         responses={**answer(Webhook, 200, "The subscription (never its secret)"),
                                    **documented(*TENANT, 404)}, **scope)
    routes.add_api_route("/v1/webhooks", list_webhooks_up_to(page_size), methods=["GET"], operation_id="list_webhooks",
                         responses={**answer(WebhookPage, 200, "A page of the tenant's subscriptions"),
                                    **documented(*TENANT, 400)}, **scope)
    routes.add_api_route("/v1/webhooks/{webhook_id}", delete_webhook, methods=["DELETE"], status_code=204,
                         operation_id="delete_webhook", responses=documented(*TENANT, 404), **scope)
    routes.add_api_route("/v1/webhooks/{webhook_id}/rotate-secret", rotate_secret, methods=["POST"],
                         operation_id="rotate_webhook_secret",
                         responses={**answer(CreatedWebhook, 200, "The subscription with its new signing secret, "
                                                                  "shown this once (`Cache-Control: no-store`); the "
                                                                  "old one signs too until `previous_secret_expires_at`"),
                                    **documented(*TENANT, 404, 413)}, **scope)
    _add_delivery_routes(routes, "/v1/webhooks/{webhook_id}", list_deliveries_up_to(page_size), redeliver,
                         ("list_deliveries", "redeliver"), "the subscription's", (404,))
    routes.add_api_route("/v1/callbacks/secret", set_callback_secret, methods=["POST"], operation_id="set_callback_secret",
                         responses={**answer(CallbackSecret, 200, "The tenant's new callback secret (made, or rotated: "
                                                                  "the old one signs too until "
                                                                  "`previous_secret_expires_at`), shown this once "
                                                                  "(`Cache-Control: no-store`)"),
                                    **documented(*TENANT, 413)}, **scope)
    _add_delivery_routes(routes, "/v1/callbacks", list_callback_deliveries_up_to(page_size), redeliver_callback,
                         ("list_callback_deliveries", "redeliver_callback"), "the tenant's tasks' `callback_url`")


def _add_delivery_routes(routes: APIRouter, prefix: str, listing, redelivery, operation_ids: tuple[str, str],
                         whose: str, not_found: tuple[int, ...] = ()) -> None:
    """An owner's deliveries (a subscription's, or the tenant's callbacks') and their redelivery."""
    routes.add_api_route(f"{prefix}/deliveries", listing, methods=["GET"], operation_id=operation_ids[0],
                         responses={**answer(DeliveryPage, 200, f"A page of {whose} deliveries, each with its most "
                                                                f"recent attempts"),
                                    **documented(*TENANT, 400, *not_found)}, **needs(WEBHOOKS_WRITE))
    routes.add_api_route(f"{prefix}/deliveries/{{delivery_id}}/redeliver", redelivery, methods=["POST"],
                         status_code=202, operation_id=operation_ids[1],
                         responses={**answer(Delivery, 202, "The delivery, due again now with the same event id and "
                                                            "body and a fresh budget of attempts"),
                                    **documented(*TENANT, 404, 409)}, **needs(WEBHOOKS_WRITE))
