"""The GraphQL documents the service sends to Shopify's Admin API (version 2026-10).

One canonical set, imported by the Shopify push and checked by the tests against the
real 2026-10 schema (the Shopify stand-in validates every call against it too), so a
document that Shopify would refuse cannot ship. Variables, never string splicing, carry
every value; :func:`sku_search` builds the one search string the push needs.

Requested costs (Shopify's documented method, computed by the stand-in and pinned by
the tests): ``SET_QUANTITIES`` 10 points whatever its size (at most 250 quantities);
``ITEMS_BY_SKU`` 2 + 250 = 252 at ``first: 250``; ``ITEMS_WITH_LEVEL`` 2 + 250 x 3 = 752
at ``first: 250``, under the single-query maximum of 1,000.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

API_VERSION: Final = "2026-10"
#: Shopify's limit on input arrays and on a connection page.
MAX_BATCH: Final = 250

#: Inventory item ids of SKUs (paged by ``after``). ``query`` comes from sku_search().
ITEMS_BY_SKU: Final = """
query ItemsBySku($query: String!, $first: Int!, $after: String) {
  inventoryItems(first: $first, after: $after, query: $query) {
    nodes { id sku }
    pageInfo { hasNextPage endCursor }
  }
}
""".strip()

#: Items of SKUs with their quantities at one location: what compare-and-set needs.
ITEMS_WITH_LEVEL: Final = """
query ItemsWithLevel($query: String!, $first: Int!, $after: String, $locationId: ID!) {
  inventoryItems(first: $first, after: $after, query: $query) {
    nodes {
      id
      sku
      inventoryLevel(locationId: $locationId) {
        id
        quantities(names: ["available", "committed", "on_hand"]) { name quantity }
      }
    }
    pageInfo { hasNextPage endCursor }
  }
}
""".strip()

#: One item's quantities at one location.
ITEM_LEVEL: Final = """
query ItemLevel($id: ID!, $locationId: ID!) {
  inventoryItem(id: $id) {
    id
    sku
    inventoryLevel(locationId: $locationId) {
      id
      quantities(names: ["available", "committed", "on_hand"]) { name quantity }
    }
  }
}
""".strip()

#: A level by its id (``gid://shopify/InventoryLevel/...``).
LEVEL: Final = """
query Level($id: ID!) {
  inventoryLevel(id: $id) {
    id
    item { id sku }
    location { id }
    quantities(names: ["available", "committed", "on_hand"]) { name quantity }
  }
}
""".strip()

#: The shop's locations (ids and names, to map the service's location ids).
LOCATIONS: Final = """
query Locations($first: Int!, $after: String) {
  locations(first: $first, after: $after) {
    nodes { id legacyResourceId name isActive }
    pageInfo { hasNextPage endCursor }
  }
}
""".strip()

#: Set ``available`` of up to 250 item-locations, each with its compare-and-set
#: ``changeFromQuantity`` (explicit null skips the check), under an idempotency key.
#: The group's changes are not asked for: the push knows what it set, and 500 change
#: objects per call would cost both sides time for nothing. A null group with no
#: userErrors means nothing had to change.
SET_QUANTITIES: Final = """
mutation SetQuantities($input: InventorySetQuantitiesInput!, $idempotencyKey: String!) {
  inventorySetQuantities(input: $input) @idempotent(key: $idempotencyKey) {
    inventoryAdjustmentGroup { id }
    userErrors { field message code }
  }
}
""".strip()

ALL: Final = {
    "ItemsBySku": ITEMS_BY_SKU,
    "ItemsWithLevel": ITEMS_WITH_LEVEL,
    "ItemLevel": ITEM_LEVEL,
    "Level": LEVEL,
    "Locations": LOCATIONS,
    "SetQuantities": SET_QUANTITIES,
}

_BARE: Final = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._-]*$")


def _search_value(sku: str) -> str:
    if _BARE.match(sku):
        return sku
    escaped = sku.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def sku_search(skus: Iterable[str]) -> str:
    """``sku:A OR sku:"B/1"`` for Shopify's search syntax (values quoted unless plain).
    Search matches loosely: compare each returned ``sku`` with the one asked for."""
    terms = [f"sku:{_search_value(sku)}" for sku in skus]
    if not terms:
        raise ValueError("no SKUs to search for")
    return " OR ".join(terms)
