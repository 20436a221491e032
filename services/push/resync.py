"""``push resync``: read a shop's levels and correct every difference with our figures.

Our figures come from the serving records in Redis (every SKU, or those named); the
shop's from ``inventoryItems`` with each level (250 SKUs a call), paced by the same
bucket rules as the push. Each correction is a compare-and-set against the level just
read, journalled like the push's own calls (so a resync killed half-way is finished by
the push process), and recorded as what we last set. A level under a stale-compare
hold is not raised above its ceiling.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from availability.push_decision import capped
from availability.push_policy import PushPolicyBook
from infra import shopify_documents as docs
from infra.config import Settings
from infra.redis_client import connect
from infra.shopify_config import ShopifyTarget
from infra.store import AvailabilityStore
from services.push.metrics import PushMetrics
from services.push.state import Settled
from services.push.target import SET_COST, STALE, PushTarget

Say = Callable[[str], None]
#: Rounds of read-and-set for levels whose compare went stale meanwhile.
ROUNDS = 3


@dataclass
class ResyncReport:
    checked: int = 0
    corrected: int = 0
    unmapped: list[str] = field(default_factory=list)
    still_different: int = 0


async def all_skus(store: AvailabilityStore) -> list[str]:
    """Every SKU with a serving record."""
    head = store.sku_key("")[:-2]  # "{prefix}:sku:"
    found = []
    async for key in store.client.scan_iter(match=f"{head}{{*}}", count=2000):
        text = key.decode() if isinstance(key, bytes) else str(key)
        found.append(text[len(head) + 1 : -1])
    return sorted(found)


async def resync(
    settings: Settings,
    config: ShopifyTarget,
    skus: Sequence[str] | None,
    say: Say,
    *,
    dry_run: bool = False,
) -> ResyncReport:
    redis = connect(settings.redis_url, cluster=settings.redis_cluster)
    store = AvailabilityStore.for_settings(settings)
    target = PushTarget(config, settings, redis, PushPolicyBook, PushMetrics())
    report = ResyncReport()
    await target.client.start()
    try:
        wanted = list(skus) if skus else await all_skus(store)
        say(f"resync {config.name}: {len(wanted)} SKU(s), {len(config.locations)} location(s)")
        for start in range(0, len(wanted), docs.MAX_BATCH):
            chunk = wanted[start : start + docs.MAX_BATCH]
            await _resync_chunk(target, store, chunk, report, dry_run)
        say(
            f"resync {config.name}: {report.checked} level(s) checked, {report.corrected}"
            f" corrected{' (dry run: none written)' if dry_run else ''},"
            f" {report.still_different} still different, {len(report.unmapped)} SKU(s)"
            " without an item in the shop"
        )
        return report
    finally:
        await target.client.close()
        await store.close()
        await redis.aclose()


async def _resync_chunk(
    target: PushTarget,
    store: AvailabilityStore,
    skus: Sequence[str],
    report: ResyncReport,
    dry_run: bool,
) -> None:
    config = target.config
    ours: dict[tuple[str, str], tuple[int, int]] = {}
    for sku, (version, figures) in zip(skus, await store.read_versions(skus), strict=True):
        if figures is None:
            continue
        for loc in figures.locations:
            if loc.location_id in config.locations:
                ours[(sku, loc.location_id)] = (loc.ats(config.channel), version)
    if not ours:
        return
    states = await target.state.load(sorted({s for s, _ in ours}))
    target.skus.update(states)
    items = await target.find_items(sorted({s for s, _ in ours}))
    await target.state.save_items(items, time.time())
    report.unmapped.extend(s for s, item in sorted(items.items()) if not item)
    todo = {k: v for k, v in ours.items() if items.get(k[0])}
    report.checked += len(todo)
    for _ in range(ROUNDS):
        if not todo:
            return
        shop: dict[tuple[str, str], int] = {}
        for location in sorted({loc for _, loc in todo}):
            found = await target.read_levels(
                sorted({s for s, loc in todo if loc == location}), location
            )
            shop.update({(sku, location): n for sku, n in found.items()})
        now = time.time()
        quantities: list[dict[str, Any]] = []
        keys: list[tuple[str, str]] = []
        settled: list[Settled] = []
        for (sku, location), (figure, version) in sorted(todo.items()):
            level = states[sku].level(location)
            quantity = capped(figure, level.hold, now)
            current = shop.get((sku, location), 0)
            if quantity == current:
                settled.append(Settled(sku, location, current, version, level.hold))
                continue
            quantities.append(
                {
                    "inventoryItemId": items[sku],
                    "locationId": config.locations[location],
                    "quantity": quantity,
                    "changeFromQuantity": current,
                }
            )
            keys.append((sku, location))
            settled.append(Settled(sku, location, quantity, version, level.hold))
        if dry_run:
            report.corrected += len(quantities)
            return
        stale = await _set(target, quantities, keys)
        await target.state.settle(s for s in settled if (s.sku, s.location) not in stale)
        report.corrected += len(quantities) - len([k for k in stale if k in todo])
        todo = {k: v for k, v in todo.items() if k in stale}
    report.still_different += len(todo)


async def _set(
    target: PushTarget, quantities: list[dict[str, Any]], keys: list[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Set the quantities (one call per 250); the levels whose compare went stale."""
    stale: set[tuple[str, str]] = set()
    for start in range(0, len(quantities), docs.MAX_BATCH):
        chunk = quantities[start : start + docs.MAX_BATCH]
        key = f"resync-{target.name}-{uuid.uuid4().hex}"
        variables = target._variables(key, chunk)
        await target.state.journal_put(key, {"variables": variables, "levels": []})
        answer = await target.client.call("SetQuantities", docs.SET_QUANTITIES, variables, SET_COST)
        await target.state.journal_done(key)
        errors = (answer.data.get("inventorySetQuantities") or {}).get("userErrors") or []
        if errors:
            # Nothing of the call was applied: every level of it goes to the next round.
            codes = {str(e.get("code")) for e in errors}
            if codes - {STALE}:
                raise RuntimeError(f"the shop refused corrections: {sorted(codes)}")
            stale.update(keys[start : start + docs.MAX_BATCH])
    return stale
