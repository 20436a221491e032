"""``POST /v1/webhooks/shopify``: Shopify's order webhooks (README "Shopify order
webhooks").

Open to bearer auth (Shopify cannot send our tokens); authenticated instead by the
``X-Shopify-Hmac-Sha256`` signature of the raw body with the client secret of the shop
that ``X-Shopify-Shop-Domain`` names. The checks, cheapest first, before anything
parses the body:

- Shopify's headers (topic, shop domain, webhook id) are present: else 400;
- the shop is a configured target with a client secret, and a signature is sent:
  else 401;
- the body is at most 1 MiB: else 413;
- the signature matches the body (in constant time): else 401, nothing published.

Then ``services.webhooks.receiver`` does the rest, and the answer is 200 (also for a
repeat, a topic we do not handle, and a webhook dead-lettered) or 503, so that
Shopify retries, when the broker did not acknowledge in time or another delivery of
the same webhook is being processed at that moment.
"""

from __future__ import annotations

import re
from typing import Any, Final

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from services.http import schemas
from services.http.access import OPEN, UNAUTHENTICATED
from services.http.errors import ApiError
from services.http.responses import json_response
from services.http.validation import read_body
from services.webhooks.publisher import PublishFailed
from services.webhooks.receiver import InProgress, WebhookReceiver
from services.webhooks.signature import verify

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

TOPIC_HEADER: Final = "X-Shopify-Topic"
SHOP_HEADER: Final = "X-Shopify-Shop-Domain"
WEBHOOK_ID_HEADER: Final = "X-Shopify-Webhook-Id"
SIGNATURE_HEADER: Final = "X-Shopify-Hmac-Sha256"
#: Shopify's webhook ids are UUIDs; this much keeps a Redis key and a log line sane.
WEBHOOK_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: What the app keeps on ``app.state`` (``services.http.app``).
STATE_ATTRIBUTE: Final = "shopify_webhooks"

# Outcomes of refused requests (the metric's ``outcome`` label).
INVALID: Final = "invalid"
REFUSED: Final = "unauthenticated"
UNAVAILABLE: Final = "unavailable"


class WebhookOutcome(BaseModel):
    outcome: str = Field(
        examples=["published"],
        description="published, duplicate, ignored, dead_lettered or no_change",
    )
    events: int = Field(description="reservation events published")
    dead_letters: int = Field(description="lines (or the whole payload) dead-lettered")


def _header(name: str, description: str, required: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": {"type": "string"},
    }


_DOCUMENTED = {
    **OPEN,
    "parameters": [
        _header(TOPIC_HEADER, "e.g. orders/create; other topics are answered 200 and ignored"),
        _header(SHOP_HEADER, "the shop: one of AVAILABILITY_SHOPIFY_TARGETS' shop_domain"),
        _header(WEBHOOK_ID_HEADER, "the same on every retry of a delivery: the dedupe key"),
        _header(
            SIGNATURE_HEADER,
            "base64 HMAC-SHA256 of the raw body with the shop's client secret",
            required=False,  # a missing one is a 401, like a wrong one
        ),
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
}


def receiver_of(request: Request) -> WebhookReceiver:
    receiver = getattr(request.app.state, STATE_ATTRIBUTE, None)
    if not isinstance(receiver, WebhookReceiver):
        raise RuntimeError("the app's lifespan has not run: no webhook receiver")
    return receiver


@router.post(
    "/shopify",
    summary="Shopify order webhooks into reservations",
    description=(
        "orders/create, orders/cancelled, orders/fulfilled, fulfillments/create and"
        " refunds/create, signed by Shopify (X-Shopify-Hmac-Sha256 over the raw body with"
        " the shop's client secret), become reservation events on orders.reservations."
        " No bearer token: the signature is the credential. 200 once the events are"
        " acknowledged by the broker, for a repeat (same X-Shopify-Webhook-Id), for a"
        " topic that is not handled, and for lines that cannot be mapped (dead-lettered);"
        " 503, so that Shopify retries, when the broker did not acknowledge in time or"
        " another delivery of the same webhook is being processed at that moment."
    ),
    response_model=None,
    openapi_extra=_DOCUMENTED,
    responses={
        200: {"model": WebhookOutcome, "description": "Taken (or a repeat, or ignored)"},
        400: {"model": schemas.ErrorBody, "description": "Not a Shopify webhook: a header missing"},
        401: {"model": schemas.ErrorBody, "description": "Unknown shop, or a bad signature"},
        413: {"model": schemas.ErrorBody, "description": "A body over 1 MiB"},
        503: {
            "model": schemas.ErrorBody,
            "description": "The broker did not acknowledge in time, or another delivery of"
            " the webhook is being processed",
        },
        "default": {"model": schemas.ErrorBody, "description": "Error"},
    },
)
async def shopify_webhook(request: Request) -> Response:
    receiver = receiver_of(request)
    headers = request.headers
    topic = headers.get(TOPIC_HEADER)

    def refuse(outcome: str, error: ApiError) -> ApiError:
        receiver.metrics.answered(topic, outcome)
        return error

    for name in (TOPIC_HEADER, SHOP_HEADER, WEBHOOK_ID_HEADER):
        if not headers.get(name):
            raise refuse(INVALID, ApiError.invalid(f"not a Shopify webhook: no {name} header"))
    shop = receiver.shops.by_domain(headers[SHOP_HEADER])
    if shop is None:
        message = "unknown shop: no Shopify target with a client secret has this shop_domain"
        raise refuse(REFUSED, ApiError(401, UNAUTHENTICATED, message))
    signature = headers.get(SIGNATURE_HEADER)
    if not signature:
        raise refuse(REFUSED, ApiError(401, UNAUTHENTICATED, f"no {SIGNATURE_HEADER} signature"))
    try:
        body = await read_body(request)
    except ApiError as exc:
        raise refuse(INVALID, exc) from None
    if not verify(body, signature, shop.secret):
        message = f"the {SIGNATURE_HEADER} signature does not match the body"
        raise refuse(REFUSED, ApiError(401, UNAUTHENTICATED, message))
    webhook_id = headers[WEBHOOK_ID_HEADER]
    if WEBHOOK_ID.fullmatch(webhook_id) is None:
        message = f"{WEBHOOK_ID_HEADER} must be 1-128 characters of [A-Za-z0-9._:-]"
        raise refuse(INVALID, ApiError.invalid(message))
    try:
        outcome = await receiver.process(shop, str(topic), webhook_id, body)
    except (PublishFailed, InProgress) as exc:
        raise refuse(UNAVAILABLE, ApiError.unavailable(f"{exc}; retry")) from None
    return json_response(outcome.to_data())
