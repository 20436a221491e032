"""What the push reads from a shop: inventory item ids of SKUs, and levels.

Shopify's search is loose (case-insensitive, prefixes): only a node whose ``sku`` is
exactly ours counts. ``first`` is the number of SKUs asked, so a call's requested cost
is what it needs (2 + n for ids, 2 + 3n with the level), not the 250-node maximum.
"""

from __future__ import annotations

from collections.abc import Sequence

from infra import shopify_documents as docs
from services.push.shopify import ShopifyClient


async def find_items(client: ShopifyClient, skus: Sequence[str]) -> dict[str, str]:
    """SKU -> inventory item GID, "" for a SKU the shop has no item for (at most 250)."""
    found: dict[str, str] = dict.fromkeys(skus, "")
    after = None
    while True:
        variables = {"query": docs.sku_search(skus), "first": len(skus), "after": after}
        answer = await client.call("ItemsBySku", docs.ITEMS_BY_SKU, variables, 2 + len(skus))
        page = answer.data["inventoryItems"]
        for node in page["nodes"]:
            if node.get("sku") in found and not found[node["sku"]]:
                found[node["sku"]] = node["id"]
        if not page["pageInfo"]["hasNextPage"]:
            return found
        after = page["pageInfo"]["endCursor"]


async def read_levels(
    client: ShopifyClient, skus: Sequence[str], location_gid: str
) -> dict[str, int]:
    """The shop's ``available`` of each SKU at one location (0 where the item is not
    stocked there; SKUs it has no item for are left out)."""
    found: dict[str, int] = {}
    wanted = set(skus)
    for start in range(0, len(skus), docs.MAX_BATCH):
        chunk = list(skus[start : start + docs.MAX_BATCH])
        after = None
        while True:
            variables = {
                "query": docs.sku_search(chunk),
                "first": len(chunk),
                "after": after,
                "locationId": location_gid,
            }
            answer = await client.call(
                "ItemsWithLevel", docs.ITEMS_WITH_LEVEL, variables, 2 + 3 * len(chunk)
            )
            page = answer.data["inventoryItems"]
            for node in page["nodes"]:
                if node.get("sku") not in wanted or node["sku"] in found:
                    continue
                quantities = (node.get("inventoryLevel") or {}).get("quantities") or []
                found[node["sku"]] = next(
                    (int(q["quantity"]) for q in quantities if q["name"] == "available"), 0
                )
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
    return found
