"""Orders placed at the stand-in (a simulated Shopify checkout) and what they do to
inventory, plus their webhook payloads in the REST webhook JSON shape (API 2026-10).

Inventory follows Shopify's states: a checkout moves units from available to committed
at the order's location; a cancel (restocking) moves them back; a fulfillment removes
them from committed (so on_hand drops); a refund restocks as its ``restock_type`` says
(``cancel``: unfulfilled units back to available, ``return``: returned units into
available, ``no_restock``: nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from dev.shopify_admin.gids import gid
from dev.shopify_admin.model import Ids, Item, Level, Shop, now_iso


class OrderError(ValueError):
    """A request the simulated shop refuses (the control API answers 409/422)."""


@dataclass
class OrderLine:
    id: int
    item: Item
    quantity: int
    fulfilled: int = 0
    restocked: int = 0  # unfulfilled units given back by a cancel or refund

    @property
    def open(self) -> int:
        return self.quantity - self.fulfilled - self.restocked


@dataclass
class Order:
    id: int
    number: int
    location_id: int
    source: str
    lines: list[OrderLine]
    email: str = "buyer@example.com"
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    cancelled_at: str | None = None
    cancel_reason: str | None = None
    fulfillments: list[dict[str, Any]] = field(default_factory=list)
    refunds: list[dict[str, Any]] = field(default_factory=list)


def _level(shop: Shop, item: Item, location_id: int) -> Level:
    level = shop.level(item.id, location_id)
    if level is None:
        raise OrderError(f"item {item.sku!r} is not stocked at location {location_id}")
    return level


def checkout(
    shop: Shop,
    ids: Ids,
    number: int,
    location_id: int,
    lines: list[tuple[Item, int]],
    source: str,
    allow_oversell: bool = False,
) -> Order:
    if location_id not in shop.locations:
        raise OrderError(f"unknown location {location_id}")
    if not lines or any(quantity < 1 for _, quantity in lines):
        raise OrderError("an order needs line items with quantity >= 1")
    for item, quantity in lines:
        level = _level(shop, item, location_id)
        if not allow_oversell and level.get("available") < quantity:
            raise OrderError(f"only {level.get('available')} of {item.sku!r} available")
    for item, quantity in lines:
        _level(shop, item, location_id).move("available", "committed", quantity)
    order_lines = [OrderLine(ids.next(), item, quantity) for item, quantity in lines]
    return Order(ids.next(), number, location_id, source, order_lines)


def cancel(shop: Shop, order: Order, restock: bool = True) -> None:
    if order.cancelled_at is not None:
        raise OrderError("order already cancelled")
    for line in order.lines:
        units = line.open
        if units:
            level = _level(shop, line.item, order.location_id)
            level.move("committed", "available" if restock else None, units)
            line.restocked += units
    order.cancelled_at = order.updated_at = now_iso()
    order.cancel_reason = "customer"


def fulfill(shop: Shop, ids: Ids, order: Order) -> dict[str, Any]:
    if order.cancelled_at is not None:
        raise OrderError("order is cancelled")
    shipped = [(line, line.open) for line in order.lines if line.open]
    if not shipped:
        raise OrderError("nothing left to fulfil")
    for line, units in shipped:
        _level(shop, line.item, order.location_id).move("committed", None, units)
        line.fulfilled += units
    fulfillment_id = ids.next()
    now = now_iso()
    fulfillment = {
        "id": fulfillment_id,
        "admin_graphql_api_id": gid("Fulfillment", fulfillment_id),
        "order_id": order.id,
        "status": "success",
        "created_at": now,
        "updated_at": now,
        "service": "manual",
        "shipment_status": None,
        "location_id": order.location_id,
        "name": f"#{order.number}.{len(order.fulfillments) + 1}",
        "tracking_company": None,
        "tracking_number": None,
        "tracking_numbers": [],
        "tracking_url": None,
        "tracking_urls": [],
        "line_items": [_line_json(line, units) for line, units in shipped],
    }
    order.fulfillments.append(fulfillment)
    order.updated_at = now
    return fulfillment


def refund(
    shop: Shop, ids: Ids, order: Order, requested: list[tuple[int, int, str]]
) -> dict[str, Any]:
    by_id = {line.id: line for line in order.lines}
    refund_lines = []
    for line_id, quantity, restock_type in requested:
        line = by_id.get(line_id)
        if line is None:
            raise OrderError(f"order has no line item {line_id}")
        if restock_type not in ("cancel", "return", "no_restock"):
            raise OrderError("restock_type must be cancel, return or no_restock")
        if restock_type == "cancel" and quantity > line.open:
            raise OrderError(f"only {line.open} unfulfilled units of line {line_id}")
        if restock_type == "return" and quantity > line.fulfilled:
            raise OrderError(f"only {line.fulfilled} fulfilled units of line {line_id}")
        level = _level(shop, line.item, order.location_id)
        if restock_type == "cancel":
            level.move("committed", "available", quantity)
            line.restocked += quantity
        elif restock_type == "return":
            level.move(None, "available", quantity)
        refund_line_id = ids.next()
        refund_lines.append(
            {
                "id": refund_line_id,
                "line_item_id": line.id,
                "location_id": order.location_id if restock_type != "no_restock" else None,
                "quantity": quantity,
                "restock_type": restock_type,
                "subtotal": str(Decimal(line.item.price) * quantity),
                "total_tax": "0.00",
                "line_item": _line_json(line, line.quantity),
            }
        )
    refund_id = ids.next()
    now = now_iso()
    document = {
        "id": refund_id,
        "admin_graphql_api_id": gid("Refund", refund_id),
        "order_id": order.id,
        "created_at": now,
        "processed_at": now,
        "note": None,
        "restock": any(r["restock_type"] != "no_restock" for r in refund_lines),
        "user_id": None,
        "refund_line_items": refund_lines,
        "transactions": [],
        "order_adjustments": [],
        "duties": [],
    }
    order.refunds.append(document)
    order.updated_at = now
    return document


def _line_json(line: OrderLine, quantity: int) -> dict[str, Any]:
    item = line.item
    return {
        "id": line.id,
        "admin_graphql_api_id": gid("LineItem", line.id),
        "variant_id": item.variant_id,
        "product_id": item.product_id,
        "sku": item.sku,
        "title": item.title,
        "name": item.title,
        "variant_title": None,
        "vendor": "Stand-in",
        "quantity": quantity,
        "current_quantity": line.open + line.fulfilled,
        "fulfillable_quantity": line.open,
        "fulfillment_service": "manual",
        "fulfillment_status": "fulfilled" if line.fulfilled == line.quantity else None,
        "gift_card": False,
        "grams": 0,
        "price": item.price,
        "product_exists": True,
        "properties": [],
        "requires_shipping": item.requires_shipping,
        "taxable": True,
        "tax_lines": [],
        "total_discount": "0.00",
        "discount_allocations": [],
        "duties": [],
    }


def order_json(shop: Shop, order: Order) -> dict[str, Any]:
    """The order as the ``orders/*`` webhooks carry it (REST JSON, a realistic subset)."""
    subtotal = sum(Decimal(line.item.price) * line.quantity for line in order.lines)
    fulfilled = all(line.fulfilled == line.quantity for line in order.lines)
    partial = any(line.fulfilled for line in order.lines)
    return {
        "id": order.id,
        "admin_graphql_api_id": gid("Order", order.id),
        "name": f"#{order.number}",
        "order_number": order.number,
        "number": order.number - 1000,
        "email": order.email,
        "contact_email": order.email,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
        "processed_at": order.created_at,
        "cancelled_at": order.cancelled_at,
        "cancel_reason": order.cancel_reason,
        "closed_at": None,
        "confirmed": True,
        "test": False,
        "currency": "USD",
        "presentment_currency": "USD",
        "financial_status": "paid",
        "fulfillment_status": "fulfilled" if fulfilled else ("partial" if partial else None),
        "source_name": order.source,
        # Shopify sets the order's location for POS orders only.
        "location_id": order.location_id if order.source == "pos" else None,
        "subtotal_price": f"{subtotal:.2f}",
        "total_price": f"{subtotal:.2f}",
        "total_tax": "0.00",
        "total_discounts": "0.00",
        "taxes_included": False,
        "tags": "",
        "note": None,
        "customer": None,
        "shipping_address": None,
        "billing_address": None,
        "line_items": [_line_json(line, line.quantity) for line in order.lines],
        "fulfillments": list(order.fulfillments),
        "refunds": list(order.refunds),
        "shipping_lines": [],
        "discount_codes": [],
        "note_attributes": [],
        "payment_gateway_names": ["manual"],
    }
