"""The stand-in's in-memory shops: locations, inventory items, levels and their named
quantities, adjustment groups, access tokens.

Per (item, location) the stored states are available, committed, reserved, damaged,
safety_stock, quality_control and incoming; ``on_hand`` is never stored but always
their sum (less incoming), as Shopify defines it. Setting ``on_hand`` therefore moves
``available`` by the same amount, and a checkout moves units from available to
committed without changing on_hand.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from dev.shopify_admin.bucket import PLANS, LeakyBucket
from dev.shopify_admin.idempotency import IdempotencyKeys

ON_HAND_PARTS: Final = (
    "available",
    "committed",
    "reserved",
    "damaged",
    "safety_stock",
    "quality_control",
)
STORED: Final = (*ON_HAND_PARTS, "incoming")
READABLE: Final = frozenset((*STORED, "on_hand"))
SETTABLE: Final = frozenset({"available", "on_hand"})


def now_iso() -> str:
    """Shopify's DateTime form: UTC, seconds, ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Ids:
    """Numeric ids like Shopify's: 13 digits, above 2**32, so that a client storing
    them in 32-bit integers fails here as it would there."""

    def __init__(self, start: int = 1_000_000_000_001) -> None:
        self._next = itertools.count(start)

    def next(self) -> int:
        return next(self._next)


@dataclass
class Location:
    id: int
    name: str
    active: bool = True
    fulfills_online_orders: bool = True
    created_at: str = field(default_factory=now_iso)


@dataclass
class Item:
    id: int
    sku: str | None
    variant_id: int
    product_id: int
    title: str
    price: str = "10.00"
    tracked: bool = True
    requires_shipping: bool = True
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)


@dataclass
class Level:
    item_id: int
    location_id: int
    quantities: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STORED, 0))
    active: bool = True
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)

    def get(self, name: str) -> int:
        if name == "on_hand":
            return sum(self.quantities[part] for part in ON_HAND_PARTS)
        return self.quantities[name]

    def set(self, name: str, value: int) -> int:
        """Set a settable quantity; returns the delta. ``on_hand`` moves available."""
        delta = value - self.get(name)
        self.quantities["available"] += delta
        self.updated_at = now_iso()
        return delta

    def move(self, source: str | None, target: str | None, units: int) -> None:
        """Move units between states (None: in from or out to outside on_hand)."""
        if source is not None:
            self.quantities[source] -= units
        if target is not None:
            self.quantities[target] += units
        self.updated_at = now_iso()


@dataclass(frozen=True)
class Change:
    item_id: int
    location_id: int
    name: str
    delta: int
    quantity_after: int
    ledger_document_uri: str | None = None


@dataclass
class AdjustmentGroup:
    id: int
    reason: str
    reference_document_uri: str | None
    changes: list[Change]
    created_at: str = field(default_factory=now_iso)


@dataclass(frozen=True)
class Token:
    """An access token's grants. ``scopes`` None means every scope; ``forbidden`` makes
    every call answer 403 (an app whose access was not approved)."""

    label: str
    scopes: frozenset[str] | None = None
    forbidden: bool = False

    def holds_any(self, scopes: frozenset[str]) -> bool:
        if self.scopes is None or not scopes:
            return True
        # A write scope grants the matching read scope (Shopify's access scopes).
        granted = self.scopes | {"read_" + s[6:] for s in self.scopes if s.startswith("write_")}
        return bool(granted & scopes)


@dataclass
class Shop:
    domain: str
    bucket: LeakyBucket = field(default_factory=lambda: LeakyBucket(*PLANS["standard"]))
    locations: dict[int, Location] = field(default_factory=dict)
    items: dict[int, Item] = field(default_factory=dict)
    levels: dict[tuple[int, int], Level] = field(default_factory=dict)
    groups: dict[int, AdjustmentGroup] = field(default_factory=dict)
    idempotency: IdempotencyKeys = field(default_factory=IdempotencyKeys)

    def level(self, item_id: int, location_id: int) -> Level | None:
        return self.levels.get((item_id, location_id))

    def item_by_sku(self, sku: str) -> Item | None:
        return next((item for item in self.items.values() if item.sku == sku), None)

    def levels_of_item(self, item_id: int) -> list[Level]:
        return sorted(
            (lv for (i, _), lv in self.levels.items() if i == item_id),
            key=lambda lv: lv.location_id,
        )

    def levels_at(self, location_id: int) -> list[Level]:
        return sorted(
            (lv for (_, loc), lv in self.levels.items() if loc == location_id),
            key=lambda lv: lv.item_id,
        )
