"""Shopify global ids (``gid://shopify/Type/123``) as the stand-in writes and reads them."""

from __future__ import annotations

import re
from typing import Final

_GID: Final = re.compile(r"^gid://shopify/([A-Za-z]+)/(\d+)(?:\?(.*))?$")


def gid(kind: str, number: int, query: str = "") -> str:
    return f"gid://shopify/{kind}/{number}" + (f"?{query}" if query else "")


def level_gid(location_id: int, item_id: int) -> str:
    # Shopify's own form: the location in the path, the item as a parameter.
    return gid("InventoryLevel", location_id, f"inventory_item_id={item_id}")


def parse_gid(value: str, kind: str) -> int | None:
    """The number of a ``gid://shopify/{kind}/N``, or None if ``value`` is not one."""
    match = _GID.match(value)
    if match is None or match.group(1) != kind:
        return None
    return int(match.group(2))


def parse_level_gid(value: str) -> tuple[int, int] | None:
    """(location id, item id) of an InventoryLevel gid, or None."""
    match = _GID.match(value)
    if match is None or match.group(1) != "InventoryLevel" or not match.group(3):
        return None
    params = dict(p.split("=", 1) for p in match.group(3).split("&") if "=" in p)
    item = params.get("inventory_item_id", "")
    return (int(match.group(2)), int(item)) if item.isdigit() else None
