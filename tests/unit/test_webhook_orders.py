"""``services.webhooks.orders``: Shopify order webhooks -> reservation events, on the
payloads the Shopify stand-in builds (``dev.shopify_admin.orders``, REST webhook JSON
of API 2026-10), and what the fold makes of them."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from availability.events import event_from_dict
from availability.state import fold_all
from dev.shopify_admin import orders as shopify
from dev.shopify_admin.gids import gid
from dev.shopify_admin.model import Ids, Item, Level, Location, Shop
from services.webhooks.orders import (
    FULFILLMENTS_CREATE,
    INVALID_LINE,
    NO_LOCATION,
    NO_SKU,
    ORDERS_CANCELLED,
    ORDERS_CREATE,
    ORDERS_FULFILLED,
    REFUNDS_CREATE,
    UNMAPPED_LOCATION,
    MalformedWebhook,
    Mapped,
    ShopMapping,
    map_webhook,
    reservation_id,
)


class Standin:
    """A stand-in shop in memory: STORE-001 and WH-1 (mapped), POPUP (not mapped)."""

    def __init__(self) -> None:
        self.shop = Shop("acme.myshopify.com")
        self.ids = Ids()
        self.numbers = itertools.count(1001)
        self.locations: dict[str, int] = {}
        for name in ("STORE-001", "WH-1", "POPUP"):
            location = Location(self.ids.next(), name)
            self.shop.locations[location.id] = location
            self.locations[name] = location.id
        self.items: dict[str | None, Item] = {}
        for sku in ("SKU-1", "SKU-2", None, "bad sku", "GIFT-25"):
            item = Item(self.ids.next(), sku, self.ids.next(), self.ids.next(), f"P {sku}")
            self.items[sku] = item
            for location_id in self.shop.locations:
                level = Level(item.id, location_id)
                level.quantities["available"] = 50
                self.shop.levels[(item.id, location_id)] = level

    def mapping(self, default: str | None = "WH-1") -> ShopMapping:
        return ShopMapping(
            "main",
            "online",
            {gid("Location", self.locations[n]): n for n in ("STORE-001", "WH-1")},
            default,
        )

    def order(
        self, location: str, lines: list[tuple[str | None, int]], source: str = "pos"
    ) -> shopify.Order:
        return shopify.checkout(
            self.shop,
            self.ids,
            next(self.numbers),
            self.locations[location],
            [(self.items[sku], qty) for sku, qty in lines],
            source,
        )

    def payload(self, order: shopify.Order) -> dict[str, Any]:
        return shopify.order_json(self.shop, order)


@pytest.fixture
def standin() -> Standin:
    return Standin()


def rid(order: shopify.Order, index: int) -> str:
    return reservation_id("main", order.id, order.lines[index].id)


def test_orders_create_reserves_each_line_at_the_pos_orders_location(standin: Standin) -> None:
    order = standin.order("STORE-001", [("SKU-1", 2), ("SKU-2", 1)])
    mapped = map_webhook(ORDERS_CREATE, standin.payload(order), standin.mapping())
    assert (mapped.order_id, mapped.unmapped, mapped.skipped) == (order.id, [], 0)
    assert mapped.events == [
        {
            "event_id": f"{rid(order, 0)}:created",
            "type": "reservation.created",
            "sku": "SKU-1",
            "reservation_id": f"shopify:main:{order.id}:{order.lines[0].id}",
            "location_id": "STORE-001",
            "quantity": 2,
            "occurred_at": order.created_at,
            "channel": "online",
        },
        {
            "event_id": f"{rid(order, 1)}:created",
            "type": "reservation.created",
            "sku": "SKU-2",
            "reservation_id": rid(order, 1),
            "location_id": "STORE-001",
            "quantity": 1,
            "occurred_at": order.created_at,
            "channel": "online",
        },
    ]
    for event in mapped.events:
        event_from_dict(event)  # what the worker accepts


def test_an_online_order_is_held_at_the_targets_default_location(standin: Standin) -> None:
    order = standin.order("STORE-001", [("SKU-1", 1)], source="web")
    payload = standin.payload(order)
    assert payload["location_id"] is None  # Shopify names a location for POS orders only
    [event] = map_webhook(ORDERS_CREATE, payload, standin.mapping("WH-1")).events
    assert event["location_id"] == "WH-1"

    without = map_webhook(ORDERS_CREATE, payload, standin.mapping(None))
    assert without.events == []
    [line] = without.unmapped
    assert line.kind == NO_LOCATION
    assert "no default location" in line.reason and "'main'" in line.reason
    assert line.event["location_id"] is None  # for a replay with --patch
    assert line.line_item_id == order.lines[0].id


def test_lines_that_cannot_be_mapped_are_set_apart_and_the_rest_published(
    standin: Standin,
) -> None:
    order = standin.order("STORE-001", [("SKU-1", 1), (None, 1), ("bad sku", 2), ("GIFT-25", 1)])
    payload = standin.payload(order)
    payload["line_items"][3]["gift_card"] = True  # a gift card holds no stock
    mapped = map_webhook(ORDERS_CREATE, payload, standin.mapping())
    assert [e["sku"] for e in mapped.events] == ["SKU-1"]
    assert [(u.kind, u.line_item_id) for u in mapped.unmapped] == [
        (NO_SKU, order.lines[1].id),
        (INVALID_LINE, order.lines[2].id),
    ]
    assert mapped.unmapped[0].event["sku"] is None
    assert "is not 1-128 characters" in mapped.unmapped[1].reason
    assert mapped.skipped == 1


def test_a_location_outside_the_targets_map_is_not_guessed(standin: Standin) -> None:
    order = standin.order("POPUP", [("SKU-1", 1)])
    mapped = map_webhook(ORDERS_CREATE, standin.payload(order), standin.mapping())
    [line] = mapped.unmapped
    assert line.kind == UNMAPPED_LOCATION
    assert f"gid://shopify/Location/{standin.locations['POPUP']}" in line.reason


def test_orders_cancelled_releases_every_line(standin: Standin) -> None:
    order = standin.order("STORE-001", [("SKU-1", 2), ("SKU-2", 1)])
    shopify.cancel(standin.shop, order)
    mapped = map_webhook(ORDERS_CANCELLED, standin.payload(order), standin.mapping())
    assert mapped.events == [
        {
            "event_id": f"{rid(order, n)}:cancelled",
            "type": "reservation.released",
            "sku": sku,
            "reservation_id": rid(order, n),
            "location_id": "STORE-001",
            "occurred_at": order.cancelled_at,
        }
        for n, sku in enumerate(["SKU-1", "SKU-2"])
    ]


def test_both_fulfilment_topics_tell_the_same_events(standin: Standin) -> None:
    order = standin.order("STORE-001", [("SKU-1", 3)], source="web")
    fulfillment = shopify.fulfill(standin.shop, standin.ids, order)
    from_order = map_webhook(ORDERS_FULFILLED, standin.payload(order), standin.mapping())
    from_fulfillment = map_webhook(FULFILLMENTS_CREATE, fulfillment, standin.mapping())
    assert (
        from_order.events
        == from_fulfillment.events
        == [
            {
                "event_id": f"{rid(order, 0)}:fulfillment:{fulfillment['id']}",
                "type": "reservation.fulfilled",
                "sku": "SKU-1",
                "reservation_id": rid(order, 0),
                "location_id": "STORE-001",  # where it shipped from, not the default
                "quantity": 3,
                "occurred_at": fulfillment["created_at"],
            }
        ]
    )
    assert from_fulfillment.order_id == order.id


def test_only_successful_fulfilments_ship(standin: Standin) -> None:
    order = standin.order("STORE-001", [("SKU-1", 1)])
    fulfillment = shopify.fulfill(standin.shop, standin.ids, order)
    fulfillment["status"] = "pending"
    mapped = map_webhook(FULFILLMENTS_CREATE, fulfillment, standin.mapping())
    assert (mapped.events, mapped.skipped) == ([], 1)


def test_a_refund_of_unfulfilled_units_shrinks_or_releases_the_reservation(
    standin: Standin,
) -> None:
    order = standin.order("WH-1", [("SKU-1", 5), ("SKU-2", 2)])
    one, two = (line.id for line in order.lines)
    refund = shopify.refund(standin.shop, standin.ids, order, [(one, 2, "cancel")])
    [shrink] = map_webhook(REFUNDS_CREATE, refund, standin.mapping()).events
    refund_line_id = refund["refund_line_items"][0]["id"]
    assert shrink == {
        "event_id": f"{rid(order, 0)}:refund:{refund_line_id:020d}",
        "type": "reservation.created",
        "sku": "SKU-1",
        "reservation_id": rid(order, 0),
        "location_id": "WH-1",
        "quantity": 3,
        "occurred_at": refund["created_at"],
        "channel": "online",
    }
    everything = shopify.refund(standin.shop, standin.ids, order, [(two, 2, "cancel")])
    [release] = map_webhook(REFUNDS_CREATE, everything, standin.mapping()).events
    assert (release["type"], release["reservation_id"]) == ("reservation.released", rid(order, 1))


def test_returns_and_refunds_without_restock_change_no_reservation(standin: Standin) -> None:
    order = standin.order("WH-1", [("SKU-1", 2)])
    shopify.fulfill(standin.shop, standin.ids, order)
    line = order.lines[0].id
    refund = shopify.refund(
        standin.shop, standin.ids, order, [(line, 1, "return"), (line, 1, "no_restock")]
    )
    mapped = map_webhook(REFUNDS_CREATE, refund, standin.mapping())
    assert (mapped.events, mapped.unmapped, mapped.skipped) == ([], [], 2)


def fold_sku(events: list[dict[str, Any]], sku: str, now: int = 0) -> tuple[int, int]:
    """(on hand, reserved) at WH-1 after folding ``events`` of ``sku`` on 10 units."""
    balance = {"event_id": "erp", "type": "erp.balance", "sku": sku, "location_id": "WH-1",
               "on_hand": 10, "as_of": "2020-01-01T00:00:00Z"}  # fmt: skip
    state = fold_all(sku, [event_from_dict(e) for e in [balance, *events] if e["sku"] == sku])
    return state.on_hand("WH-1"), state.reserved(now)[0].get("WH-1", 0)


def test_the_fold_makes_the_same_of_any_order_and_any_repeat(standin: Standin) -> None:
    order = standin.order("WH-1", [("SKU-1", 4)])
    create = map_webhook(ORDERS_CREATE, standin.payload(order), standin.mapping()).events
    shopify.cancel(standin.shop, order)
    cancel = map_webhook(ORDERS_CANCELLED, standin.payload(order), standin.mapping()).events
    assert fold_sku(create, "SKU-1") == (10, 4)
    # Cancelled, then a late (or repeated) orders/create: the line stays closed.
    for events in itertools.permutations([*create, *cancel, *create]):
        assert fold_sku(list(events), "SKU-1") == (10, 0)

    shipped = standin.order("WH-1", [("SKU-2", 3)])
    created = map_webhook(ORDERS_CREATE, standin.payload(shipped), standin.mapping()).events
    fulfillment = shopify.fulfill(standin.shop, standin.ids, shipped)
    by_order = map_webhook(ORDERS_FULFILLED, standin.payload(shipped), standin.mapping()).events
    by_fulfillment = map_webhook(FULFILLMENTS_CREATE, fulfillment, standin.mapping()).events
    for events in itertools.permutations([*created, *by_order, *by_fulfillment]):
        assert fold_sku(list(events), "SKU-2") == (7, 0)  # shipped once, not twice


def test_payloads_that_are_not_orders_are_malformed(standin: Standin) -> None:
    payload = standin.payload(standin.order("STORE-001", [("SKU-1", 1)]))
    cases: list[tuple[str, object, str]] = [
        (ORDERS_CREATE, [1, 2], "must be a JSON object"),
        (ORDERS_CREATE, {**payload, "id": "12"}, "id must be a Shopify id"),
        (ORDERS_CREATE, {**payload, "id": True}, "id must be a Shopify id"),
        (ORDERS_CREATE, {**payload, "line_items": {}}, "line_items must be a list"),
        (ORDERS_CREATE, {**payload, "line_items": [7]}, r"line_items\[0\] must be a JSON object"),
        (ORDERS_CREATE, {**payload, "created_at": "yesterday"}, "created_at must be an RFC 3339"),
        (ORDERS_FULFILLED, {**payload, "fulfillments": None}, "fulfillments must be a list"),
        (REFUNDS_CREATE, {"order_id": 5, "created_at": payload["created_at"]}, "refund_line_items"),
    ]
    for topic, body, message in cases:
        with pytest.raises(MalformedWebhook, match=message):
            map_webhook(topic, body, standin.mapping())
    with pytest.raises(ValueError, match="not an order webhook topic"):
        map_webhook("products/update", payload, standin.mapping())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([ORDERS_CREATE, ORDERS_CANCELLED, ORDERS_FULFILLED, REFUNDS_CREATE]),
    st.data(),
)
def test_any_damage_to_a_payload_is_refused_or_mapped_never_a_crash(
    topic: str, data: st.DataObject
) -> None:
    """Fields of a real payload replaced by arbitrary JSON: the mapping either refuses
    the payload (MalformedWebhook) or returns events the worker accepts."""
    standin = Standin()
    order = standin.order("STORE-001", [("SKU-1", 2), ("SKU-2", 1)])
    fulfillment = shopify.fulfill(standin.shop, standin.ids, order)
    refund_order = standin.order("WH-1", [("SKU-1", 2)])
    refund = shopify.refund(
        standin.shop, standin.ids, refund_order, [(refund_order.lines[0].id, 1, "cancel")]
    )
    payload = refund if topic == REFUNDS_CREATE else standin.payload(order)
    assert fulfillment["line_items"]
    damaged = damage(payload, data)
    try:
        mapped = map_webhook(topic, damaged, standin.mapping())
    except MalformedWebhook:
        return
    assert isinstance(mapped, Mapped)
    for event in mapped.events:
        event_from_dict(event)


def damage(value: Any, data: st.DataObject, depth: int = 0) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if data.draw(st.integers(0, 9), label=f"{key}?") == 0:
                out[key] = data.draw(json_values, label=key)
            elif data.draw(st.integers(0, 19), label=f"drop {key}?") == 0:
                continue
            else:
                out[key] = damage(item, data, depth + 1)
        return out
    if isinstance(value, list):
        return [damage(item, data, depth + 1) for item in value]
    return value
