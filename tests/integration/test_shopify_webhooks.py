"""Order webhooks from the Shopify stand-in: signed as Shopify signs them (verified
with the check the service will need), duplicates and retries keeping their webhook id,
out-of-order delivery, and what orders do to inventory."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest

from tests.integration.shopify_support import (
    CLIENT_SECRET,
    TOKEN,
    Shop,
    WebhookReceiver,
    verify_shopify_hmac,
)
from tests.integration.shopify_support import receiver as receiver
from tests.integration.shopify_support import shop as shop
from tests.integration.shopify_support import standin as standin


def test_a_checkout_sends_a_signed_orders_create(shop: Shop, receiver: WebhookReceiver) -> None:
    placed = shop.standin.checkout("STORE-001", [{"sku": "SKU-1", "quantity": 2}], source="pos")
    (request,) = receiver.wait_for(1)
    assert verify_shopify_hmac(
        request.body, request.headers["x-shopify-hmac-sha256"], CLIENT_SECRET
    )
    assert not verify_shopify_hmac(
        request.body + b" ", request.headers["x-shopify-hmac-sha256"], CLIENT_SECRET
    )
    headers = request.headers
    assert headers["x-shopify-topic"] == "orders/create"
    assert headers["x-shopify-shop-domain"] == shop.standin.shop
    assert headers["x-shopify-api-version"] == "2026-10"
    assert headers["content-type"] == "application/json"
    assert headers["x-shopify-webhook-id"] == placed["webhooks"][0]
    assert uuid.UUID(headers["x-shopify-event-id"]) and headers["x-shopify-triggered-at"].endswith(
        "Z"
    )
    order = request.json()
    assert order["id"] == placed["order"]["id"] and order["id"] > 2**32
    assert order["location_id"] == int(shop.locations["STORE-001"].rsplit("/", 1)[1])
    (line,) = order["line_items"]
    assert (line["sku"], line["quantity"]) == ("SKU-1", 2)
    assert line["variant_id"] and line["id"] and line["fulfillable_quantity"] == 2
    level = shop.standin.level("SKU-1", "STORE-001")
    assert (level["available"], level["committed"], level["on_hand"]) == (10, 2, 12)


def test_duplicates_and_retries_keep_their_webhook_id(
    shop: Shop, receiver: WebhookReceiver
) -> None:
    receiver.statuses = [500]  # the first attempt fails: Shopify retries the same delivery
    shop.standin.checkout(
        "STORE-001", [{"sku": "SKU-1", "quantity": 1}], webhook={"deliver_twice": True}
    )
    received = receiver.wait_for(3)
    assert len({r.webhook_id for r in received}) == 1
    assert len({r.headers["x-shopify-event-id"] for r in received}) == 1
    assert len({r.body for r in received}) == 1
    assert [r.status for r in received].count(500) == 1
    assert all(
        verify_shopify_hmac(r.body, r.headers["x-shopify-hmac-sha256"], CLIENT_SECRET)
        for r in received
    )
    time.sleep(0.1)
    deliveries = shop.standin.deliveries()
    assert sorted(len(d["attempts"]) for d in deliveries) == [1, 2]
    assert all(d["state"] == "delivered" for d in deliveries)


def test_out_of_order_delivery_and_the_rest_of_an_orders_life(
    shop: Shop, receiver: WebhookReceiver
) -> None:
    placed = shop.standin.checkout(
        "WH-1", [{"sku": "SKU-1", "quantity": 3}], webhook={"delay": 0.6}
    )["order"]
    shop.standin.order_action(placed["id"], "cancel")
    first, second = receiver.wait_for(2)
    assert (first.topic, second.topic) == ("orders/cancelled", "orders/create")  # out of order
    assert first.json()["cancelled_at"] is not None and first.json()["location_id"] is None
    assert shop.available("SKU-1", "WH-1") == 40  # restocked

    order = shop.standin.checkout("WH-1", [{"sku": "SKU-1", "quantity": 5}])["order"]
    fulfilled = shop.standin.order_action(order["id"], "fulfill")
    level = shop.standin.level("SKU-1", "WH-1")
    assert (level["available"], level["committed"], level["on_hand"]) == (35, 0, 35)
    line_id = order["line_items"][0]["id"]
    shop.standin.order_action(
        order["id"],
        "refund",
        line_items=[{"line_item_id": line_id, "quantity": 2, "restock_type": "return"}],
    )
    assert shop.available("SKU-1", "WH-1") == 37
    # Each delivery is its own request, as Shopify's are: they may arrive in any order.
    by_topic = {r.topic: r for r in receiver.wait_for(6)[2:]}
    assert sorted(by_topic) == [
        "fulfillments/create",
        "orders/create",
        "orders/fulfilled",
        "refunds/create",
    ]
    fulfillment = by_topic["fulfillments/create"].json()
    assert fulfillment["id"] == fulfilled["fulfillment"]["id"]
    assert fulfillment["location_id"] == int(shop.locations["WH-1"].rsplit("/", 1)[1])
    refund = by_topic["refunds/create"].json()
    (refund_line,) = refund["refund_line_items"]
    assert (refund_line["line_item_id"], refund_line["quantity"], refund_line["restock_type"]) == (
        line_id,
        2,
        "return",
    )


def test_an_order_beyond_what_is_available_is_refused(
    shop: Shop, receiver: WebhookReceiver
) -> None:
    with pytest.raises(Exception, match="409"):
        shop.standin.checkout("STORE-001", [{"sku": "SKU-2", "quantity": 4}])
    assert shop.available("SKU-2", "STORE-001") == 3
    assert receiver.received == []


def test_stand_in_log_has_no_secrets(shop: Shop, receiver: WebhookReceiver) -> None:
    shop.standin.checkout("STORE-001", [{"sku": "SKU-1", "quantity": 1}])
    receiver.wait_for(1)
    text = shop.standin.log_path.read_text()
    assert CLIENT_SECRET not in text and TOKEN not in text
    view = orjson.dumps(shop.standin.state()).decode()
    assert CLIENT_SECRET not in view and TOKEN not in view
