"""A tenant's webhooks (``/v1/webhooks``): subscriptions (create — the signing secret is in this
answer only —, read, list, delete), each one's deliveries with their log, and redelivery by hand.
The workers send the deliveries (``webhook_dispatch``); what is sent and how it is signed is in
``webhooks``.

Every route needs ``webhooks:write``, reading included: a subscription's URL is configuration
that often carries a credential of the receiver (a token in its path or query), and the delivery
log says where a tenant's task events go and how its receivers answer — more than a credential
made to read tasks (``tasks:read``) should learn. One scope also keeps the rule "each route
needs exactly one" without a scope for reading webhooks that nobody asked for yet."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from taskplatform import webhooks
from taskplatform.cursors import decode_cursor, encode_cursor
from taskplatform.deps import RateLimitedTenant, services_of
from taskplatform.errors import TENANT, ApiError, documented
from taskplatform.responses import CreatedWebhook, Delivery, DeliveryPage, Webhook, WebhookEvent, WebhookPage, answer
from taskplatform.scopes import WEBHOOKS_WRITE, needs
from taskplatform.storable import unstorable_text

# A name that does not resolve at once is refused rather than waited for: the request holds a
# slot of the API process meanwhile.
RESOLVE_TIMEOUT_SECONDS = 2.0


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


def parse_id(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ApiError(404, "not_found", f"no such {what}") from None


async def create_webhook(request: Request, body: CreateWebhook, tenant_id: RateLimitedTenant):
    services = services_of(request)
    try:
        config = services.config.config
        await webhooks.check_url(body.url, config.webhook_allow_private_addresses, RESOLVE_TIMEOUT_SECONDS,
                                 tuple(config.webhook_allowed_networks))
    except webhooks.UrlRefused as exc:
        raise ApiError(400, "url_not_allowed", f"url: {exc}") from None
    secret = webhooks.new_secret()
    created = await services.webhooks.create(tenant_id, body.url, body.events, body.description, secret)
    # The one time the secret is shown (it is stored to sign with, never shown again).
    return JSONResponse({**created, "secret": secret}, status_code=201, headers={"Cache-Control": "no-store"})


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


def _page(items: list[dict], limit: int) -> dict:
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_cursor": encode_cursor(items[-1]) if more else None}


async def delete_webhook(request: Request, webhook_id: str, tenant_id: RateLimitedTenant):
    if not await services_of(request).webhooks.delete(tenant_id, parse_id(webhook_id, "webhook")):
        raise ApiError(404, "not_found", "no such webhook")
    return Response(status_code=204)


async def redeliver(request: Request, webhook_id: str, delivery_id: str, tenant_id: RateLimitedTenant):
    delivery, queued = await services_of(request).webhooks.redeliver(
        tenant_id, parse_id(webhook_id, "webhook"), parse_id(delivery_id, "delivery"))
    if delivery is None:
        raise ApiError(404, "not_found", "no such delivery of this webhook")
    if not queued:
        raise ApiError(409, "conflict", "the delivery is pending: it is tried again at its next_attempt_at; "
                                        "redeliver once it has succeeded or failed")
    return JSONResponse(delivery, status_code=202)


def add_routes(routes: APIRouter, page_size: int) -> None:
    """The webhook routes, in the order the OpenAPI lists them; ``page_size`` is
    TASKS_API_MAX_PAGE_SIZE. Every one needs ``webhooks:write`` (the module says why)."""
    routes.add_api_route("/v1/webhooks", create_webhook, methods=["POST"], status_code=201,
                         responses={**answer(CreatedWebhook, 201, "The subscription with its signing secret, shown "
                                                                  "this once (`Cache-Control: no-store`)"),
                                    **documented(*TENANT, 400, 413)}, **needs(WEBHOOKS_WRITE))
    routes.add_api_route("/v1/webhooks/{webhook_id}", get_webhook, methods=["GET"],
                         responses={**answer(Webhook, 200, "The subscription (never its secret)"),
                                    **documented(*TENANT, 404)}, **needs(WEBHOOKS_WRITE))
    routes.add_api_route("/v1/webhooks", list_webhooks_up_to(page_size), methods=["GET"],
                         responses={**answer(WebhookPage, 200, "A page of the tenant's subscriptions"),
                                    **documented(*TENANT, 400)}, **needs(WEBHOOKS_WRITE))
    routes.add_api_route("/v1/webhooks/{webhook_id}", delete_webhook, methods=["DELETE"], status_code=204,
                         responses=documented(*TENANT, 404), **needs(WEBHOOKS_WRITE))
    routes.add_api_route("/v1/webhooks/{webhook_id}/deliveries", list_deliveries_up_to(page_size), methods=["GET"],
                         responses={**answer(DeliveryPage, 200, "A page of the subscription's deliveries, each with "
                                                                "its most recent attempts"),
                                    **documented(*TENANT, 400, 404)}, **needs(WEBHOOKS_WRITE))
    routes.add_api_route("/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", redeliver, methods=["POST"],
                         status_code=202,
                         responses={**answer(Delivery, 202, "The delivery, due again now with the same event id and "
                                                            "body and a fresh budget of attempts"),
                                    **documented(*TENANT, 404, 409)}, **needs(WEBHOOKS_WRITE))
