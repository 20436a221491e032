"""Shopify order webhooks -> ``reservation.*`` events (README "Shopify order webhooks").

Pure: a payload (REST webhook JSON, API 2026-10) and the shop's mapping in, events and
the lines that could not be mapped out. No I/O, no clock.

Each order line is one reservation line, ``shopify:<target>:<order id>:<line id>``:

- ``orders/create``: ``reservation.created`` of the line's quantity, at the order's
  location (POS orders name one) or else the target's default location, on the
  target's channel, without expiry.
- ``orders/cancelled``: ``reservation.released`` of every line.
- ``orders/fulfilled`` (every successful fulfilment the order lists) and
  ``fulfillments/create``: ``reservation.fulfilled`` of the units shipped, at the
  fulfilment's location.
- ``refunds/create``: a refund line that restocks unfulfilled units
  (``restock_type: cancel``) shrinks the reservation to what is left to fulfil (a
  newer ``reservation.created``) or, when nothing is, releases it. Returns and refunds
  without restocking change no reservation: returned goods reach on hand through the
  ERP or the store's POS.

Event ids are derived from what happened, never from the delivery: a repeat of a
webhook, or ``orders/fulfilled`` and ``fulfillments/create`` telling of the same
fulfilment, give the same events, which the fold applies once. Gift cards hold no
stock and are skipped.

A line that cannot be mapped (no SKU, no location, a location the target's map does
not know, a value the event cannot carry) becomes an ``Unmapped``: its event as far
as it could be built (missing fields null, so that a replay can patch them in) and
the reason. A payload that is not an order, fulfilment or refund at all raises
``MalformedWebhook``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from availability.events import InvalidEvent, event_from_dict
from availability.identifiers import is_sku, parse_timestamp

ORDERS_CREATE: Final = "orders/create"
ORDERS_CANCELLED: Final = "orders/cancelled"
ORDERS_FULFILLED: Final = "orders/fulfilled"
FULFILLMENTS_CREATE: Final = "fulfillments/create"
REFUNDS_CREATE: Final = "refunds/create"
TOPICS: Final = (
    ORDERS_CREATE,
    ORDERS_CANCELLED,
    ORDERS_FULFILLED,
    FULFILLMENTS_CREATE,
    REFUNDS_CREATE,
)

#: Why a line was not mapped: the metric label of its dead letter.
NO_SKU: Final = "no_sku"
NO_LOCATION: Final = "no_location"
UNMAPPED_LOCATION: Final = "unmapped_location"
INVALID_LINE: Final = "invalid_line"

_MAX_ID: Final = 2**63 - 1
_LOCATION_GID: Final = "gid://shopify/Location/"


class MalformedWebhook(ValueError):
    """The payload is not what its topic carries; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class ShopMapping:
    """What the mapping needs of a target: its name (in reservation ids), the channel
    of its reservations, its location GIDs -> our location ids, and where an order that
    names no location is held (None: such lines are not mapped)."""

    target: str
    channel: str
    locations: Mapping[str, str]
    default_location: str | None = None


@dataclass(frozen=True, slots=True)
class Unmapped:
    event: dict[str, Any]
    reason: str
    kind: str  # NO_SKU, NO_LOCATION, UNMAPPED_LOCATION or INVALID_LINE
    line_item_id: int


@dataclass(slots=True)
class Mapped:
    order_id: int
    events: list[dict[str, Any]] = field(default_factory=list)
    unmapped: list[Unmapped] = field(default_factory=list)
    skipped: int = 0  # lines that hold no stock, or that this topic leaves alone


def reservation_id(target: str, order_id: int, line_item_id: int) -> str:
    return f"shopify:{target}:{order_id}:{line_item_id}"


def map_webhook(topic: str, payload: object, shop: ShopMapping) -> Mapped:
    """The events of one webhook. ``topic`` must be one of ``TOPICS``."""
    mapper = _MAPPERS.get(topic)
    if mapper is None:
        raise ValueError(f"not an order webhook topic: {topic!r}")
    return mapper(_object(payload, "the payload"), shop)


# --- per topic ---------------------------------------------------------------------


def _order_created(order: Mapping[str, Any], shop: ShopMapping) -> Mapped:
    mapped = Mapped(_id(order.get("id"), "id"))
    occurred_at = _timestamp(order, "created_at")
    location = _location(order.get("location_id"), shop, "the order")
    for line, line_id in _lines(order, "line_items"):
        # A line edited down to nothing reserves nothing (not a mapping failure).
        if _holds_no_stock(line) or (type(line.get("quantity")) is int and line["quantity"] == 0):
            mapped.skipped += 1
            continue
        rid = reservation_id(shop.target, mapped.order_id, line_id)
        event = _event("reservation.created", f"{rid}:created", rid, line.get("sku"), location)
        event.update(quantity=line.get("quantity"), occurred_at=occurred_at, channel=shop.channel)
        _add(mapped, event, line_id, line.get("sku"), location)
    return mapped


def _order_cancelled(order: Mapping[str, Any], shop: ShopMapping) -> Mapped:
    mapped = Mapped(_id(order.get("id"), "id"))
    # A cancelled order carries cancelled_at; updated_at is when the cancel was saved.
    field_name = "cancelled_at" if order.get("cancelled_at") is not None else "updated_at"
    occurred_at = _timestamp(order, field_name)
    location = _location(order.get("location_id"), shop, "the order")
    for line, line_id in _lines(order, "line_items"):
        if _holds_no_stock(line):
            mapped.skipped += 1
            continue
        rid = reservation_id(shop.target, mapped.order_id, line_id)
        event = _event("reservation.released", f"{rid}:cancelled", rid, line.get("sku"), location)
        event["occurred_at"] = occurred_at
        _add(mapped, event, line_id, line.get("sku"), location)
    return mapped


def _order_fulfilled(order: Mapping[str, Any], shop: ShopMapping) -> Mapped:
    mapped = Mapped(_id(order.get("id"), "id"))
    fulfillments = order.get("fulfillments")
    if not isinstance(fulfillments, list):
        raise MalformedWebhook("fulfillments must be a list")
    for index, fulfillment in enumerate(fulfillments):
        _fulfillment(mapped, _object(fulfillment, f"fulfillments[{index}]"), shop)
    return mapped


def _fulfillment_created(fulfillment: Mapping[str, Any], shop: ShopMapping) -> Mapped:
    mapped = Mapped(_id(fulfillment.get("order_id"), "order_id"))
    _fulfillment(mapped, fulfillment, shop)
    return mapped


def _fulfillment(mapped: Mapped, fulfillment: Mapping[str, Any], shop: ShopMapping) -> None:
    fulfillment_id = _id(fulfillment.get("id"), "fulfillment id")
    lines = list(_lines(fulfillment, "line_items"))
    # Only a successful fulfilment shipped anything (pending, open: not yet;
    # cancelled, error, failure: never).
    if fulfillment.get("status") != "success":
        mapped.skipped += len(lines)
        return
    occurred_at = _timestamp(fulfillment, "created_at")
    location = _location(fulfillment.get("location_id"), shop, "the fulfillment")
    for line, line_id in lines:
        if _holds_no_stock(line):
            mapped.skipped += 1
            continue
        rid = reservation_id(shop.target, mapped.order_id, line_id)
        event_id = f"{rid}:fulfillment:{fulfillment_id}"
        event = _event("reservation.fulfilled", event_id, rid, line.get("sku"), location)
        event.update(quantity=line.get("quantity"), occurred_at=occurred_at)
        _add(mapped, event, line_id, line.get("sku"), location)


def _refund_created(refund: Mapping[str, Any], shop: ShopMapping) -> Mapped:
    mapped = Mapped(_id(refund.get("order_id"), "order_id"))
    occurred_at = _timestamp(refund, "created_at")
    refund_lines = refund.get("refund_line_items")
    if not isinstance(refund_lines, list):
        raise MalformedWebhook("refund_line_items must be a list")
    for index, item in enumerate(refund_lines):
        where = f"refund_line_items[{index}]"
        refund_line = _object(item, where)
        refund_line_id = _id(refund_line.get("id"), f"{where}.id")
        line_id = _id(refund_line.get("line_item_id"), f"{where}.line_item_id")
        line = _object(refund_line.get("line_item"), f"{where}.line_item")
        if refund_line.get("restock_type") != "cancel" or _holds_no_stock(line):
            mapped.skipped += 1
            continue
        rid = reservation_id(shop.target, mapped.order_id, line_id)
        # Zero-padded: two refunds in the same second still order by their ids.
        event_id = f"{rid}:refund:{refund_line_id:020d}"
        location = _location(refund_line.get("location_id"), shop, "the refund line")
        left = line.get("fulfillable_quantity")
        if isinstance(left, int) and not isinstance(left, bool) and left > 0:
            # A newer reservation.created replaces the line's quantity (README
            # "Choices"): the hold shrinks to what is still to be fulfilled.
            event = _event("reservation.created", event_id, rid, line.get("sku"), location)
            event.update(quantity=left, occurred_at=occurred_at, channel=shop.channel)
        else:
            event = _event("reservation.released", event_id, rid, line.get("sku"), location)
            event["occurred_at"] = occurred_at
        _add(mapped, event, line_id, line.get("sku"), location)
    return mapped


_MAPPERS: dict[str, Callable[[Mapping[str, Any], ShopMapping], Mapped]] = {
    ORDERS_CREATE: _order_created,
    ORDERS_CANCELLED: _order_cancelled,
    ORDERS_FULFILLED: _order_fulfilled,
    FULFILLMENTS_CREATE: _fulfillment_created,
    REFUNDS_CREATE: _refund_created,
}


# --- lines and events ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Location:
    location_id: str | None
    problem: tuple[str, str] | None = None  # (kind, reason)


def _event(kind: str, event_id: str, rid: str, sku: object, location: _Location) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": kind,
        "sku": sku if isinstance(sku, str) and sku else None,
        "reservation_id": rid,
        "location_id": location.location_id,
    }


def _add(
    mapped: Mapped, event: dict[str, Any], line_id: int, sku: object, location: _Location
) -> None:
    problems: list[tuple[str, str]] = []
    if not isinstance(sku, str) or not sku:
        problems.append((NO_SKU, f"line item {line_id} has no SKU"))
    elif not is_sku(sku):
        problems.append(
            (
                INVALID_LINE,
                f"line item {line_id}: SKU {_shown(sku)} is not 1-128 characters"
                " of [A-Za-z0-9._:/-]",
            )
        )
    if location.problem is not None:
        problems.append(location.problem)
    if not problems:
        try:
            event_from_dict(event)  # what the worker would refuse is not published
        except InvalidEvent as exc:
            problems.append((INVALID_LINE, f"line item {line_id}: {exc.reason}"))
    if problems:
        reason = "; ".join(text for _, text in problems)
        mapped.unmapped.append(Unmapped(event, reason, problems[0][0], line_id))
    else:
        mapped.events.append(event)


def _location(value: object, shop: ShopMapping, whose: str) -> _Location:
    if value is None:
        if shop.default_location is not None:
            return _Location(shop.default_location)
        return _Location(
            None,
            (
                NO_LOCATION,
                f"{whose} names no location and target {shop.target!r} has no"
                " default location (AVAILABILITY_SHOPIFY_WEBHOOK_DEFAULT_LOCATIONS)",
            ),
        )
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_ID:
        gid = f"{_LOCATION_GID}{value}"
    elif isinstance(value, str) and value.startswith(_LOCATION_GID):
        gid = value
    else:
        return _Location(
            None, (INVALID_LINE, f"{whose}'s location_id {_shown(value)} is not a Shopify location")
        )
    ours = shop.locations.get(gid)
    if ours is None:
        return _Location(
            None,
            (
                UNMAPPED_LOCATION,
                f"{whose}'s location {_shown(gid)} is not in the location map"
                f" of target {shop.target!r}",
            ),
        )
    return _Location(ours)


def _holds_no_stock(line: Mapping[str, Any]) -> bool:
    return line.get("gift_card") is True


def _lines(container: Mapping[str, Any], name: str) -> Iterator[tuple[Mapping[str, Any], int]]:
    lines = container.get(name)
    if not isinstance(lines, list):
        raise MalformedWebhook(f"{name} must be a list")
    for index, item in enumerate(lines):
        line = _object(item, f"{name}[{index}]")
        yield line, _id(line.get("id"), f"{name}[{index}].id")


# --- payload fields ----------------------------------------------------------------


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise MalformedWebhook(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _id(value: object, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_ID:
        return value
    raise MalformedWebhook(f"{what} must be a Shopify id (a positive integer), got {_shown(value)}")


def _timestamp(container: Mapping[str, Any], name: str) -> str:
    value = container.get(name)
    if not isinstance(value, str):
        raise MalformedWebhook(f"{name} must be an RFC 3339 timestamp, got {_shown(value)}")
    try:
        parse_timestamp(value)
    except ValueError:
        raise MalformedWebhook(
            f"{name} must be an RFC 3339 timestamp, got {_shown(value)}"
        ) from None
    return value


def _shown(value: object) -> str:
    """A bounded preview: reasons never repeat an unbounded input."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
