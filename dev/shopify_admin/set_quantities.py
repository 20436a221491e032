"""``inventorySetQuantities`` (2026-10): set ``available`` or ``on_hand`` of up to 250
item-locations to absolute values, each with a compare-and-set ``changeFromQuantity``.

As documented for 2026-10: ``changeFromQuantity`` must be present on every quantity
(explicit ``null`` skips the check; absent is an INVALID_FIELD_ARGUMENTS error); a
mismatch is CHANGE_FROM_QUANTITY_STALE and the mutation "fails" -- the stand-in applies
nothing of the call when any quantity has a userError, so a caller never sees half a
batch applied. ``@idempotent(key:)`` is required (checked before execution) and handled
by :mod:`.idempotency`.

Behaviour chosen where the documentation is silent (README lists them): an item not yet
stocked at a location is stocked by the call (2026-10 has no ITEM_NOT_STOCKED_AT_LOCATION
code any more); quantities below zero are refused for both names
(INVALID_QUANTITY_NEGATIVE); a call that changes nothing answers
``inventoryAdjustmentGroup: null`` with no userErrors.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, Final

from graphql import GraphQLError, GraphQLResolveInfo, GraphQLString, value_from_ast

from dev.shopify_admin.context import CallContext, InternalFailure
from dev.shopify_admin.gids import parse_gid
from dev.shopify_admin.idempotency import Begun, Conflict, Replay
from dev.shopify_admin.model import SETTABLE, AdjustmentGroup, Change, Level, Shop

#: shopify.dev "Inventory states: set inventory quantities" reasons.
REASONS: Final = frozenset(
    {
        "correction",
        "cycle_count_available",
        "damaged",
        "movement_canceled",
        "movement_created",
        "movement_received",
        "movement_updated",
        "other",
        "promotion",
        "quality_control",
        "received",
        "reservation_created",
        "reservation_deleted",
        "reservation_updated",
        "restock",
        "safety_stock",
        "shrinkage",
    }
)
MAX_QUANTITY: Final = 1_000_000_000
_URI: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")
_GID_URI: Final = re.compile(r"^gid://[^/\s]+/[^/\s]+/\S+$")

MESSAGES: Final = {
    "CHANGE_FROM_QUANTITY_STALE": "The changeFromQuantity value does not match persisted value.",
    "INVALID_INVENTORY_ITEM": "The specified inventory item could not be found.",
    "INVALID_LOCATION": "The specified location could not be found.",
    "INVALID_NAME": "The quantity name must be either 'available' or 'on_hand'.",
    "INVALID_QUANTITY_NEGATIVE": "The quantity can't be negative.",
    "INVALID_QUANTITY_TOO_HIGH": "The total quantity can't be higher than 1,000,000,000.",
    "INVALID_REASON": "The specified reason is invalid.",
    "INVALID_REFERENCE_DOCUMENT": "The specified reference document is invalid.",
    "NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR": (
        "The combination of inventoryItemId and locationId must be unique."
    ),
}


def _user_error(code: str, field: list[str] | None) -> dict[str, Any]:
    return {"field": field, "message": MESSAGES[code], "code": code}


def _payload(group: AdjustmentGroup | None, errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"inventoryAdjustmentGroup": group, "userErrors": errors}


def idempotency_key(info: GraphQLResolveInfo[Any]) -> str:
    for directive in info.field_nodes[0].directives or ():
        if directive.name.value == "idempotent":
            for argument in directive.arguments or ():
                if argument.name.value == "key":
                    value = value_from_ast(
                        argument.value, GraphQLString, info.variable_values.coerced
                    )
                    if isinstance(value, str):
                        return value
    raise GraphQLError(
        "The @idempotent directive is required for this mutation but was not provided.",
        extensions={"code": "BAD_REQUEST"},
    )


def _require_change_from(quantities: list[dict[str, Any]]) -> None:
    if any("changeFromQuantity" not in q for q in quantities):
        raise GraphQLError(
            "InventoryQuantityInput must include the following argument: changeFromQuantity.",
            extensions={"code": "INVALID_FIELD_ARGUMENTS"},
        )


def _check(shop: Shop, data: dict[str, Any]) -> list[dict[str, Any]]:
    errors = []
    name = data["name"]
    if name not in SETTABLE:
        errors.append(_user_error("INVALID_NAME", ["input", "name"]))
    if data["reason"] not in REASONS:
        errors.append(_user_error("INVALID_REASON", ["input", "reason"]))
    uri = data.get("referenceDocumentUri")
    if uri is not None and (
        not _URI.match(uri) or (uri.startswith("gid://") and not _GID_URI.match(uri))
    ):
        errors.append(_user_error("INVALID_REFERENCE_DOCUMENT", ["input", "referenceDocumentUri"]))
    seen: set[tuple[int | None, int | None]] = set()
    for index, q in enumerate(data["quantities"]):
        at = ["input", "quantities", str(index)]
        item_id = parse_gid(q["inventoryItemId"], "InventoryItem")
        location_id = parse_gid(q["locationId"], "Location")
        if item_id not in shop.items:
            errors.append(_user_error("INVALID_INVENTORY_ITEM", [*at, "inventoryItemId"]))
        if location_id not in shop.locations:
            errors.append(_user_error("INVALID_LOCATION", [*at, "locationId"]))
        if (item_id, location_id) in seen:
            errors.append(_user_error("NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR", at))
        seen.add((item_id, location_id))
        if q["quantity"] < 0:
            errors.append(_user_error("INVALID_QUANTITY_NEGATIVE", [*at, "quantity"]))
        elif q["quantity"] > MAX_QUANTITY:
            errors.append(_user_error("INVALID_QUANTITY_TOO_HIGH", [*at, "quantity"]))
        expected = q["changeFromQuantity"]
        if (
            expected is not None
            and name in SETTABLE
            and item_id is not None
            and location_id is not None
        ):
            level = shop.level(item_id, location_id)
            current = level.get(name) if level is not None else 0
            if current != expected:
                errors.append(
                    _user_error("CHANGE_FROM_QUANTITY_STALE", [*at, "changeFromQuantity"])
                )
    return errors


def _apply(ctx: CallContext, data: dict[str, Any]) -> AdjustmentGroup | None:
    shop, name = ctx.shop, data["name"]
    other = "on_hand" if name == "available" else "available"
    changes: list[Change] = []
    for q in data["quantities"]:
        item_id = parse_gid(q["inventoryItemId"], "InventoryItem")
        location_id = parse_gid(q["locationId"], "Location")
        assert item_id is not None and location_id is not None
        level = shop.level(item_id, location_id)
        if level is None:
            level = shop.levels[(item_id, location_id)] = Level(item_id, location_id)
        level.active = True
        delta = level.set(name, q["quantity"])
        if delta:
            changes.append(Change(item_id, location_id, name, delta, level.get(name)))
            changes.append(Change(item_id, location_id, other, delta, level.get(other)))
    if not changes:
        return None
    group = AdjustmentGroup(
        ctx.ids.next(), data["reason"], data.get("referenceDocumentUri"), changes
    )
    shop.groups[group.id] = group
    return group


async def inventory_set_quantities(
    args: dict[str, Any], ctx: CallContext, info: GraphQLResolveInfo[Any]
) -> dict[str, Any]:
    key = idempotency_key(info)
    data = args["input"]
    _require_change_from(data["quantities"])
    keys = ctx.shop.idempotency
    outcome = keys.begin(key, json.dumps(args, sort_keys=True))
    if isinstance(outcome, Replay):
        result: dict[str, Any] = outcome.result
        return result
    if isinstance(outcome, Conflict):
        return _payload(None, [{"field": None, "message": outcome.message, "code": outcome.code}])
    assert isinstance(outcome, Begun)
    try:
        if ctx.hold > 0:
            await asyncio.sleep(ctx.hold)
        if ctx.fail_inside:
            keys.fail(key)
            raise InternalFailure(ctx.request_id)
        # Checked and applied without an await between: no other call interleaves.
        errors = _check(ctx.shop, data)
        payload = _payload(None if errors else _apply(ctx, data), errors)
    except BaseException:
        if key in keys.records and keys.records[key].state.value == "running":
            keys.forget(key)
        raise
    keys.finish(key, payload)
    return payload
