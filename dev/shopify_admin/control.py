"""The control and inspection API under ``/_standin/`` (tests, the load test, people).

Seed shops, tokens, locations, items and levels; read the state and the call log; set
the bucket; inject faults; configure webhooks and read their deliveries; place, cancel,
fulfil and refund orders, which change inventory as Shopify does and send the order
webhooks. Bound to loopback by default and unauthenticated: a development tool.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from aiohttp import web

from dev.shopify_admin import orders
from dev.shopify_admin.bucket import PLANS
from dev.shopify_admin.endpoint import STATE_KEY
from dev.shopify_admin.faults import FaultSpecError
from dev.shopify_admin.gids import gid, parse_gid
from dev.shopify_admin.model import STORED, Item, Level, Location, Token
from dev.shopify_admin.schema_cache import API_VERSION
from dev.shopify_admin.state import ShopState, StandInState
from dev.shopify_admin.webhooks import TOPICS

PREFIX: Final = "/_standin"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _ok(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _handler(fn: Callable[[StandInState, dict[str, Any], web.Request], Any]) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE_KEY]
        body: dict[str, Any] = {}
        if request.can_read_body:
            try:
                loaded = orjson.loads(await request.read())
            except orjson.JSONDecodeError:
                return _ok({"error": "body is not JSON"}, 400)
            if not isinstance(loaded, dict):
                return _ok({"error": "body must be a JSON object"}, 400)
            body = loaded
        body = {**dict(request.query), **body}
        try:
            result = fn(state, body, request)
            if isinstance(result, Awaitable):
                result = await result
        except ControlError as exc:
            return _ok({"error": str(exc)}, exc.status)
        except orders.OrderError as exc:
            return _ok({"error": str(exc)}, 409)
        except (FaultSpecError, KeyError, TypeError, ValueError) as exc:
            return _ok({"error": f"{type(exc).__name__}: {exc}"}, 400)
        return _ok(result)

    return handle


def _shop(state: StandInState, body: dict[str, Any]) -> ShopState:
    domain = body.get("shop")
    if domain is None:
        if len(state.shops) != 1:
            raise ControlError(400, "name the shop ('shop': 'name.myshopify.com')")
        return next(iter(state.shops.values()))
    found = state.shops.get(domain)
    if found is None:
        raise ControlError(404, f"no shop {domain!r}")
    return found


def _location(shop: ShopState, ref: Any) -> Location:
    if isinstance(ref, str) and ref.startswith("gid://"):
        ref = parse_gid(ref, "Location")
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        found = shop.shop.locations.get(int(ref))
    else:
        found = next((loc for loc in shop.shop.locations.values() if loc.name == ref), None)
    if found is None:
        raise ControlError(404, f"no location {ref!r}")
    return found


def _item(shop: ShopState, spec: dict[str, Any]) -> Item:
    if "sku" in spec:
        found = shop.shop.item_by_sku(spec["sku"])
    else:
        ref = spec["inventory_item_id"]
        number = parse_gid(ref, "InventoryItem") if isinstance(ref, str) else int(ref)
        found = shop.shop.items.get(number) if number is not None else None
    if found is None:
        raise ControlError(
            404, f"no inventory item {spec.get('sku') or spec.get('inventory_item_id')!r}"
        )
    return found


# --------------------------------------------------------------------- shops, seeding


def health(state: StandInState, body: dict[str, Any], request: web.Request) -> Any:
    return {"ok": True, "api_version": API_VERSION, "shops": sorted(state.shops)}


def reset(state: StandInState, body: dict[str, Any], request: web.Request) -> Any:
    state.reset()
    return {"ok": True}


def put_shop(state: StandInState, body: dict[str, Any], request: web.Request) -> Any:
    shop = state.shop(body["domain"])
    bucket = dict(body.get("bucket") or {})
    if "plan" in body:
        maximum, rate = PLANS[body["plan"]]
        bucket.setdefault("maximumAvailable", maximum)
        bucket.setdefault("restoreRate", rate)
    if bucket:
        shop.shop.bucket.configure(
            bucket.get("maximumAvailable"),
            bucket.get("restoreRate"),
            bucket.get("currentlyAvailable", bucket.get("maximumAvailable")),
        )
    for spec in body.get("tokens") or ():
        scopes = spec.get("scopes")
        token = Token(
            label=str(spec.get("label", "token")),
            scopes=None if scopes is None else frozenset(scopes),
            forbidden=bool(spec.get("forbidden", False)),
        )
        state.add_token(shop.shop.domain, str(spec["token"]), token)
    if "webhook" in body:
        _configure_webhooks(shop, body["webhook"])
    return _shop_view(state, shop)


def seed(state: StandInState, body: dict[str, Any], request: web.Request) -> Any:
    shop = _shop(state, body)
    out: dict[str, Any] = {"locations": {}, "items": {}}
    for spec in body.get("locations") or ():
        number = int(spec.get("id") or state.ids.next())
        location = shop.shop.locations[number] = Location(
            number, spec["name"], bool(spec.get("active", True))
        )
        out["locations"][location.name] = {"id": number, "gid": gid("Location", number)}
    for spec in body.get("items") or ():
        number = int(spec.get("id") or state.ids.next())
        item = Item(
            id=number,
            sku=spec.get("sku"),
            variant_id=int(spec.get("variant_id") or state.ids.next()),
            product_id=int(spec.get("product_id") or state.ids.next()),
            title=spec.get("title") or f"Product {spec.get('sku')}",
            price=str(spec.get("price", "10.00")),
        )
        shop.shop.items[number] = item
        for ref, quantities in (spec.get("levels") or {}).items():
            _set_level(shop, item, _location(shop, ref), quantities)
        out["items"][str(item.sku)] = {
            "id": number,
            "gid": gid("InventoryItem", number),
            "variant_id": item.variant_id,
        }
    return out


def _set_level(
    shop: ShopState, item: Item, location: Location, quantities: dict[str, int]
) -> Level:
    level = shop.shop.level(item.id, location.id)
    if level is None:
        level = shop.shop.levels[(item.id, location.id)] = Level(item.id, location.id)
    for name, value in quantities.items():
        if name not in STORED:
            raise ControlError(400, f"{name!r} is not a stored quantity ({', '.join(STORED)})")
        level.quantities[name] = int(value)
    level.active = True
    return level


def set_levels(state: StandInState, body: dict[str, Any], request: web.Request) -> Any:
    """A merchant's (or another app's) edit: makes a caller's changeFromQuantity stale."""
    shop = _shop(state, body)
    item = _item(shop, body)
    level = _set_level(shop, item, _location(shop, body["location"]), body["quantities"])
    return _level_view(level)


def _level_view(level: Level) -> dict[str, Any]:
    return {
        "inventory_item_id": level.item_id,
        "location_id": level.location_id,
        "active": level.active,
        **{name: level.get(name) for name in (*STORED, "on_hand")},
    }


def _shop_view(state: StandInState, shop: ShopState) -> dict[str, Any]:
    s = shop.shop
    return {
        "domain": s.domain,
        "bucket": s.bucket.status(),
        "tokens": state.tokens_of(s.domain),
        "webhook": shop.webhooks.public(),
        "locations": [
            {"id": loc.id, "gid": gid("Location", loc.id), "name": loc.name, "active": loc.active}
            for loc in s.locations.values()
        ],
        "items": [
            {
                "id": i.id,
                "gid": gid("InventoryItem", i.id),
                "sku": i.sku,
                "variant_id": i.variant_id,
            }
            for i in s.items.values()
        ],
        "levels": [_level_view(lv) for lv in s.levels.values()],
        "orders": sorted(shop.orders),
        "adjustment_groups": len(s.groups),
        "idempotency_keys": len(s.idempotency.records),
    }


def read_state(state: StandInState, body: dict[str, Any], request: web.Request) -> Any:
    return _shop_view(state, _shop(state, body))


def read_calls(state: StandInState, body: dict[str, Any], request: web.Request) -> Any:
    since = int(body.get("since", 0))
    shop = body.get("shop")
    return [c for c in state.calls if c["seq"] > since and (shop is None or c.get("shop") == shop)]


def clear_calls(state: StandInState, body: dict[str, Any], request: web.Request) -> Any:
    state.calls.clear()
    return {"ok": True}


def set_bucket(state: StandInState, body: dict[str, Any], request: web.Request) -> Any:
    shop = _shop(state, body)
    maximum, rate = PLANS[body["plan"]] if "plan" in body else (None, None)
    shop.shop.bucket.configure(
        body.get("maximumAvailable", maximum),
        body.get("restoreRate", rate),
        body.get("currentlyAvailable", maximum),
    )
    return shop.shop.bucket.status()


# --------------------------------------------------------------------- faults


def list_faults(state: StandInState, body: dict[str, Any], request: web.Request) -> Any:
    return state.faults.listing()


def add_fault(state: StandInState, body: dict[str, Any], request: web.Request) -> Any:
    if "seed" in body:
        state.faults.reseed(int(body.pop("seed")))
    return state.faults.add(body).__dict__


def clear_faults(state: StandInState, body: dict[str, Any], request: web.Request) -> Any:
    state.faults.clear()
    return {"ok": True}


# --------------------------------------------------------------------- webhooks, orders


def _configure_webhooks(shop: ShopState, spec: dict[str, Any]) -> None:
    target = shop.webhooks
    if "url" in spec:
        target.url = spec["url"]
    if "secret" in spec:
        target.secret = str(spec["secret"])
    if "retry_delays" in spec:
        target.retry_delays = tuple(float(d) for d in spec["retry_delays"])
    if "timeout" in spec:
        target.timeout = float(spec["timeout"])


def configure_webhooks(state: StandInState, body: dict[str, Any], request: web.Request) -> Any:
    shop = _shop(state, body)
    _configure_webhooks(shop, body)
    return shop.webhooks.public()


def read_deliveries(state: StandInState, body: dict[str, Any], request: web.Request) -> Any:
    shop = body.get("shop")
    return [d.public() for d in state.webhooks.deliveries if shop is None or d.shop == shop]


def _emit(
    state: StandInState, shop: ShopState, topic: str, payload: dict[str, Any], body: dict[str, Any]
) -> list[str]:
    options = body.get("webhook", {})
    if options is False or shop.webhooks.url is None:
        return []
    assert topic in TOPICS
    sent = state.webhooks.send(
        shop.webhooks,
        shop.shop.domain,
        topic,
        payload,
        deliver_twice=bool(options.get("deliver_twice", False)),
        delay=float(options.get("delay", 0.0)),
    )
    return [d.webhook_id for d in sent[:1]]


def _order(shop: ShopState, request: web.Request) -> orders.Order:
    number = int(request.match_info["order"])
    found = shop.orders.get(number)
    if found is None:
        raise ControlError(404, f"no order {number}")
    return found


def checkout(state: StandInState, body: dict[str, Any], request: web.Request) -> Any:
    shop = _shop(state, body)
    location = _location(shop, body["location"])
    lines = [(_item(shop, spec), int(spec["quantity"])) for spec in body["line_items"]]
    order = orders.checkout(
        shop.shop,
        state.ids,
        next(shop.order_numbers),
        location.id,
        lines,
        source=str(body.get("source", "web")),
        allow_oversell=bool(body.get("allow_oversell", False)),
    )
    shop.orders[order.id] = order
    payload = orders.order_json(shop.shop, order)
    return {"order": payload, "webhooks": _emit(state, shop, "orders/create", payload, body)}


def cancel_order(state: StandInState, body: dict[str, Any], request: web.Request) -> Any:
    shop = _shop(state, body)
    order = _order(shop, request)
    orders.cancel(shop.shop, order, restock=bool(body.get("restock", True)))
    payload = orders.order_json(shop.shop, order)
    return {"order": payload, "webhooks": _emit(state, shop, "orders/cancelled", payload, body)}


def fulfill_order(state: StandInState, body: dict[str, Any], request: web.Request) -> Any:
    shop = _shop(state, body)
    order = _order(shop, request)
    fulfillment = orders.fulfill(shop.shop, state.ids, order)
    payload = orders.order_json(shop.shop, order)
    topics = body.get("topics", ["orders/fulfilled", "fulfillments/create"])
    sent: list[str] = []
    for topic in topics:
        document = fulfillment if topic == "fulfillments/create" else payload
        sent += _emit(state, shop, topic, document, body)
    return {"order": payload, "fulfillment": fulfillment, "webhooks": sent}


def refund_order(state: StandInState, body: dict[str, Any], request: web.Request) -> Any:
    shop = _shop(state, body)
    order = _order(shop, request)
    requested = []
    for spec in body["line_items"]:
        line_id = spec.get("line_item_id")
        if line_id is None:
            line_id = next(line.id for line in order.lines if line.item.sku == spec["sku"])
        requested.append(
            (int(line_id), int(spec["quantity"]), str(spec.get("restock_type", "cancel")))
        )
    document = orders.refund(shop.shop, state.ids, order, requested)
    return {"refund": document, "webhooks": _emit(state, shop, "refunds/create", document, body)}


def add_routes(app: web.Application) -> None:
    get, post, delete = app.router.add_get, app.router.add_post, app.router.add_delete
    get(f"{PREFIX}/health", _handler(health))
    post(f"{PREFIX}/reset", _handler(reset))
    post(f"{PREFIX}/shops", _handler(put_shop))
    post(f"{PREFIX}/seed", _handler(seed))
    post(f"{PREFIX}/levels", _handler(set_levels))
    get(f"{PREFIX}/state", _handler(read_state))
    get(f"{PREFIX}/calls", _handler(read_calls))
    delete(f"{PREFIX}/calls", _handler(clear_calls))
    post(f"{PREFIX}/bucket", _handler(set_bucket))
    get(f"{PREFIX}/faults", _handler(list_faults))
    post(f"{PREFIX}/faults", _handler(add_fault))
    delete(f"{PREFIX}/faults", _handler(clear_faults))
    post(f"{PREFIX}/webhooks", _handler(configure_webhooks))
    get(f"{PREFIX}/webhooks/deliveries", _handler(read_deliveries))
    post(f"{PREFIX}/checkout", _handler(checkout))
    post(f"{PREFIX}/orders/{{order}}/cancel", _handler(cancel_order))
    post(f"{PREFIX}/orders/{{order}}/fulfill", _handler(fulfill_order))
    post(f"{PREFIX}/orders/{{order}}/refund", _handler(refund_order))
