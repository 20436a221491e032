"""How the stand-in answers the fields it models, run by graphql-core's executor on the
real 2026-10 schema.

One table says which (type, field) pairs are modelled and how; connection, edge and
payload objects are plain dicts read by key. Any other field of the schema is answered
with a STANDIN_NOT_MODELLED error rather than a made-up value. A middleware checks the
caller's scopes against Shopify's published requirements for every field (ACCESS_DENIED,
the field nulled, as Shopify does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from graphql import GraphQLError, GraphQLResolveInfo, get_named_type

from dev.shopify_admin import search
from dev.shopify_admin.connections import connection
from dev.shopify_admin.context import CallContext
from dev.shopify_admin.errors import access_denied, not_modelled
from dev.shopify_admin.gids import gid, level_gid, parse_gid, parse_level_gid
from dev.shopify_admin.model import READABLE, AdjustmentGroup, Change, Item, Level, Location
from dev.shopify_admin.set_quantities import inventory_set_quantities

Resolve = Callable[[Any, dict[str, Any], CallContext, GraphQLResolveInfo[Any]], Any]


def _item(ctx: CallContext, value: Any) -> Item | None:
    number = parse_gid(value, "InventoryItem") if isinstance(value, str) else None
    return ctx.shop.items.get(number) if number is not None else None


def _location(ctx: CallContext, value: Any) -> Location | None:
    number = parse_gid(value, "Location") if isinstance(value, str) else None
    return ctx.shop.locations.get(number) if number is not None else None


def _visible(level: Level | None, include_inactive: bool) -> Level | None:
    return level if level is not None and (level.active or include_inactive) else None


# --------------------------------------------------------------------- QueryRoot


def _inventory_items(_: Any, args: dict[str, Any], ctx: CallContext, __: Any) -> dict[str, Any]:
    try:
        matches = search.matcher(args.get("query"))
    except search.SearchUnsupported as exc:
        raise not_modelled(f"search query {args.get('query')!r}: {exc}") from None
    rows = [i for _, i in sorted(ctx.shop.items.items()) if matches(i.sku, i.id)]
    return connection(rows, args, lambda i: i.id)


def _locations(_: Any, args: dict[str, Any], ctx: CallContext, __: Any) -> dict[str, Any]:
    if args.get("query"):
        raise not_modelled("locations(query:)")
    rows = [
        loc
        for _, loc in sorted(ctx.shop.locations.items())
        if loc.active or args.get("includeInactive")
    ]
    return connection(rows, args, lambda loc: loc.id)


def _root_location(_: Any, args: dict[str, Any], ctx: CallContext, __: Any) -> Location | None:
    if args.get("id") is None:  # the shop's primary location
        return next(iter(sorted(ctx.shop.locations.items())), (0, None))[1]
    return _location(ctx, args["id"])


def _root_level(_: Any, args: dict[str, Any], ctx: CallContext, __: Any) -> Level | None:
    ids = parse_level_gid(args["id"])
    return ctx.shop.level(ids[1], ids[0]) if ids is not None else None


QUERY_ROOT: Final[dict[str, Resolve]] = {
    "inventoryItems": _inventory_items,
    "inventoryItem": lambda _, a, ctx, __: _item(ctx, a["id"]),
    "inventoryLevel": _root_level,
    "location": _root_location,
    "locations": _locations,
}

MUTATION: Final[dict[str, Resolve]] = {
    "inventorySetQuantities": lambda _, a, ctx, info: inventory_set_quantities(a, ctx, info),
}

# --------------------------------------------------------------------- objects


def _level_of_item(item: Item, args: dict[str, Any], ctx: CallContext, _: Any) -> Level | None:
    location = _location(ctx, args["locationId"])
    if location is None:
        return None
    return _visible(ctx.shop.level(item.id, location.id), bool(args.get("includeInactive")))


def _levels_of_item(item: Item, args: dict[str, Any], ctx: CallContext, _: Any) -> dict[str, Any]:
    if args.get("query"):
        raise not_modelled("InventoryItem.inventoryLevels(query:)")
    rows = [
        lv for lv in ctx.shop.levels_of_item(item.id) if lv.active or args.get("includeInactive")
    ]
    return connection(rows, args, lambda lv: lv.location_id)


def _quantities(
    level: Level, args: dict[str, Any], _: CallContext, __: Any
) -> list[dict[str, Any]]:
    unknown = [n for n in args["names"] if n not in READABLE]
    if unknown:
        raise GraphQLError(
            f"Invalid quantity name(s): {', '.join(unknown)}. "
            f"Valid names: {', '.join(sorted(READABLE))}."
        )
    return [
        {
            "id": gid(
                "InventoryQuantity",
                level.location_id,
                f"inventory_item_id={level.item_id}&name={name}",
            ),
            "name": name,
            "quantity": level.get(name),
            "updatedAt": level.updated_at,
        }
        for name in args["names"]
    ]


def _level_at_location(
    loc: Location, args: dict[str, Any], ctx: CallContext, _: Any
) -> Level | None:
    item = _item(ctx, args["inventoryItemId"])
    if item is None:
        return None
    return _visible(ctx.shop.level(item.id, loc.id), bool(args.get("includeInactive")))


def _levels_at_location(
    loc: Location, args: dict[str, Any], ctx: CallContext, _: Any
) -> dict[str, Any]:
    if args.get("query"):
        raise not_modelled("Location.inventoryLevels(query:)")
    rows = [lv for lv in ctx.shop.levels_at(loc.id) if lv.active or args.get("includeInactive")]
    return connection(rows, args, lambda lv: lv.item_id)


def _changes(
    group: AdjustmentGroup, args: dict[str, Any], ctx: CallContext, _: Any
) -> list[Change]:
    items = {parse_gid(v, "InventoryItem") for v in args.get("inventoryItemIds") or []}
    locations = {parse_gid(v, "Location") for v in args.get("locationIds") or []}
    names = set(args.get("quantityNames") or [])
    return [
        c
        for c in group.changes
        if (not items or c.item_id in items)
        and (not locations or c.location_id in locations)
        and (not names or c.name in names)
    ]


def _count(n: int) -> dict[str, Any]:
    return {"count": n, "precision": "EXACT"}


OBJECTS: Final[dict[str, dict[str, Resolve]]] = {
    "InventoryItem": {
        "id": lambda i, _, __, ___: gid("InventoryItem", i.id),
        "legacyResourceId": lambda i, _, __, ___: str(i.id),
        "sku": lambda i, _, __, ___: i.sku,
        "tracked": lambda i, _, __, ___: i.tracked,
        "requiresShipping": lambda i, _, __, ___: i.requires_shipping,
        "createdAt": lambda i, _, __, ___: i.created_at,
        "updatedAt": lambda i, _, __, ___: i.updated_at,
        "duplicateSkuCount": lambda i, _, ctx, __: sum(
            1 for o in ctx.shop.items.values() if o.sku == i.sku and o.id != i.id
        ),
        "inventoryLevel": _level_of_item,
        "inventoryLevels": _levels_of_item,
        "locationsCount": lambda i, _, ctx, __: _count(len(ctx.shop.levels_of_item(i.id))),
    },
    "InventoryLevel": {
        "id": lambda lv, _, __, ___: level_gid(lv.location_id, lv.item_id),
        "isActive": lambda lv, _, __, ___: lv.active,
        "canDeactivate": lambda lv, _, __, ___: lv.get("committed") == 0,
        "createdAt": lambda lv, _, __, ___: lv.created_at,
        "updatedAt": lambda lv, _, __, ___: lv.updated_at,
        "item": lambda lv, _, ctx, __: ctx.shop.items[lv.item_id],
        "location": lambda lv, _, ctx, __: ctx.shop.locations[lv.location_id],
        "quantities": _quantities,
    },
    "Location": {
        "id": lambda loc, _, __, ___: gid("Location", loc.id),
        "legacyResourceId": lambda loc, _, __, ___: str(loc.id),
        "name": lambda loc, _, __, ___: loc.name,
        "isActive": lambda loc, _, __, ___: loc.active,
        "fulfillsOnlineOrders": lambda loc, _, __, ___: loc.fulfills_online_orders,
        "createdAt": lambda loc, _, __, ___: loc.created_at,
        "hasActiveInventory": lambda loc, _, ctx, __: any(
            lv.active for lv in ctx.shop.levels_at(loc.id)
        ),
        "inventoryLevel": _level_at_location,
        "inventoryLevels": _levels_at_location,
    },
    "InventoryAdjustmentGroup": {
        "id": lambda g, _, __, ___: gid("InventoryAdjustmentGroup", g.id),
        "createdAt": lambda g, _, __, ___: g.created_at,
        "reason": lambda g, _, __, ___: g.reason,
        "referenceDocumentUri": lambda g, _, __, ___: g.reference_document_uri,
        "changes": _changes,
    },
    "InventoryChange": {
        "name": lambda c, _, __, ___: c.name,
        "delta": lambda c, _, __, ___: c.delta,
        "quantityAfterChange": lambda c, _, __, ___: c.quantity_after,
        "ledgerDocumentUri": lambda c, _, __, ___: c.ledger_document_uri,
        "item": lambda c, _, ctx, __: ctx.shop.items.get(c.item_id),
        "location": lambda c, _, ctx, __: ctx.shop.locations.get(c.location_id),
    },
}
TABLE: Final[dict[str, dict[str, Resolve]]] = {
    "QueryRoot": QUERY_ROOT,
    "Mutation": MUTATION,
    **OBJECTS,
}


def resolve_field(source: Any, info: GraphQLResolveInfo[Any], **args: Any) -> Any:
    """graphql-core's field resolver for every field of the schema."""
    fields = TABLE.get(info.parent_type.name)
    if fields is not None and (resolve := fields.get(info.field_name)) is not None:
        return resolve(source, args, info.context, info)
    if isinstance(source, Mapping) and info.field_name in source:
        return source[info.field_name]
    raise not_modelled(f"{info.parent_type.name}.{info.field_name}")


def check_scopes(
    next_: Callable[..., Any], source: Any, info: GraphQLResolveInfo[Any], **args: Any
) -> Any:
    """Middleware: the caller's token must hold a scope each requirement accepts."""
    ctx: CallContext = info.context
    return_type = get_named_type(info.return_type).name
    for need in ctx.admin.required(info.parent_type.name, info.field_name, return_type):
        if not ctx.token.holds_any(need.scopes):
            raise access_denied(info.field_name, need.text)
    return next_(source, info, **args)
