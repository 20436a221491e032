"""Pieces of the push tests: a seeded stand-in shop, change-feed records made by the
test, settings with a target pointing at the stand-in, and readers of the shop's levels
and of the stand-in's call log."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from dev.shopify_admin.client import StandIn
from infra.config import Settings
from infra.shopify_config import ShopifyTarget
from tests.integration.shopify_support import TOKEN
from tests.integration.support import free_port

LOCATIONS = ("STORE-001", "WH-1")
#: The environment variable the targets' access token is read from.
TOKEN_ENV = "TEST_SHOPIFY_TOKEN"


def seed_shop(standin: StandIn, skus: Iterable[str], **bucket: Any) -> dict[str, str]:
    """A fresh shop with our locations and an item per SKU (available 0); returns the
    location GIDs by our location id."""
    standin.control("POST", "/reset")
    standin.put_shop(tokens=[{"token": TOKEN, "label": "push"}], plan="standard", **bucket)
    seeded = standin.seed(
        locations=[{"name": name} for name in LOCATIONS],
        items=[{"sku": sku} for sku in skus],
    )
    return {name: v["gid"] for name, v in seeded["locations"].items()}


def target(
    standin: StandIn, locations: Mapping[str, str], name: str = "main", **more: Any
) -> ShopifyTarget:
    return ShopifyTarget.model_validate(
        {
            "name": name,
            "shop_domain": standin.shop,
            "admin_url": standin.base_url,
            "access_token": {"env": more.pop("token_env", TOKEN_ENV)},
            "locations": dict(locations),
            **more,
        }
    )


def push_settings(settings: Settings, targets: list[ShopifyTarget], **fields: Any) -> Settings:
    return settings.model_copy(
        update={
            "shopify_targets": targets,
            "push_metrics_port": free_port(),
            "push_status_interval": 0.2,
            **fields,
        }
    )


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def feed_records(sku: str, version: int, figures: Mapping[str, int]) -> list[dict[str, Any]]:
    """A change's change-feed records (README "Change feed"), one per location, whose
    online ATS is ``figures``."""
    return [
        {
            "sku": sku,
            "location_id": loc,
            "version": version,
            "computed_at": now_rfc3339(),
            "on_hand": ats,
            "reserved": 0,
            "in_transit": 0,
            "damaged": 0,
            "safety_stock": 0,
            "buffers": {},
            "ats": ats,
        }
        for loc, ats in sorted(figures.items())
    ]


def shop_levels(standin: StandIn) -> dict[tuple[str, str], int]:
    """(sku, location name) -> available, for every level of the shop."""
    view = standin.state()
    skus = {i["id"]: i["sku"] for i in view["items"]}
    names = {loc["id"]: loc["name"] for loc in view["locations"]}
    return {
        (skus[lv["inventory_item_id"]], names[lv["location_id"]]): lv["available"]
        for lv in view["levels"]
    }


def mutations(standin: StandIn) -> list[dict[str, Any]]:
    return [
        c
        for c in standin.calls()
        if c.get("operationName") == "SetQuantities"
        or "inventorySetQuantities" in str(c.get("query"))
    ]


def assert_no_call_applied_twice(standin: StandIn) -> None:
    """Every adjustment group comes from one idempotency key, and no (level,
    changeFrom, quantity) was applied under two keys; and every call the push made
    was a document the real 2026-10 schema accepts (the stand-in validates each)."""
    assert all(c["outcome"] not in ("invalid", "max_cost_exceeded") for c in standin.calls())
    group_keys: dict[Any, str] = {}
    applied: Counter[tuple[str, str, Any, int]] = Counter()
    seen_keys: set[str] = set()
    for call in mutations(standin):
        if call.get("outcome") != "ok" or not call.get("response"):
            continue
        key = call["variables"]["idempotencyKey"]
        group = call["response"]["data"]["inventorySetQuantities"]["inventoryAdjustmentGroup"]
        if group is not None:
            assert group_keys.setdefault(group["id"], key) == key
        if key in seen_keys or group is None:
            continue
        seen_keys.add(key)
        for q in call["variables"]["input"]["quantities"]:
            applied[
                (q["inventoryItemId"], q["locationId"], q["changeFromQuantity"], q["quantity"])
            ] += 1
    twice = [k for k, n in applied.items() if n > 1 and k[2] is not None]
    assert not twice, twice


def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def encode(records: Iterable[Mapping[str, Any]]) -> list[bytes]:
    return [orjson.dumps(r) for r in records]


def metric(port: int, name: str, **labels: str) -> float:
    """A sample's value from a process's /metrics (0 when absent)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        series, value = line.rsplit(" ", 1)
        base, _, rest = series.partition("{")
        got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if base == name and got == want:
            return float(value)
    return 0.0


def wait_consuming(handle: Any, timeout: float = 30.0) -> None:
    """Until the push process has its partitions (the group's first rebalance)."""
    wait_for(lambda: "assigned" in handle.log_path.read_text(errors="replace"), timeout)
