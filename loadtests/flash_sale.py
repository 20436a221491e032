"""The flash-sale scenario's bookkeeping, without Locust: the catalogue, the ledger of
what the simulated shoppers and stores took, and the oversell it adds up to.

**Oversell** (what ``make load`` reports). Every SKU and location starts with the stock
of its ERP balance (``Catalogue.stock``), and nothing restocks during the run. A
*claim* is a unit taken from a location: a ``pos.sale`` a store terminal published,
a hold the reserve API placed for an online checkout (``POST /v1/reservations``
answered 201), or an order a Shopify checkout placed on the Shopify stand-in. A
store claims after its location's ATS over gRPC showed the unit; Shopify, after its
own ``available`` at the shop's location did, which our push keeps equal to our online
ATS there (the stand-in refuses an order beyond it, as Shopify does for tracked
inventory that may not oversell); an online hold is checked and placed in one atomic
step by the service. A hold gives its units back when the cart is released
(``DELETE``) or expires (a claim of negative units). For each SKU and location, the
claims taken in the order made,

    oversold = the units claimed while no unit was left (stock - net units claimed)

and the run's oversell is the sum over all SKU-locations: the units promised to
customers that did not exist. Without releases it is max(0, units claimed - stock).
A service whose figures were always fresh would give 0; every unit above that was
sold on figures that lagged behind the events.

**The online channel's oversell** (:func:`online_oversell`, the figure ``make load``
fails on). The reserve API checks each hold against the folded figures and every hold
already placed, so what it cannot see is a claim the worker has not folded yet: a till
sale or Shopify order made a moment before. An online hold is counted as oversold
when its units exceed the stock less the online holds live at that moment and less
the other channels' claims made at least ``known_after_us`` (5 s) earlier, which the
service had certainly folded: a positive figure means the reserve API itself promised
units that did not exist. The units claimed by two channels within the fold's lag are
the by-channel oversell below.

**By channel** (:func:`oversold_by_channel`): at each SKU-location the claims are
taken in the order they were made; the units of a claim beyond what the earlier
claims left are that claim's channel's oversell. Shopify's share is the units Shopify
sold that no longer existed because its ``available`` had not caught up yet: the
oversell due to push lag. (The other channels' share at a Shopify location includes
units Shopify had sold whose order webhooks had not yet reached our figures.)
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loadtests.workload import location_name

Slot = tuple[str, str]  # (sku, location_id)

#: The channels that claim units, as the ledger names them.
STORE, ONLINE, SHOPIFY = "store", "online", "shopify"
CHANNELS = (STORE, ONLINE, SHOPIFY)


def hot_sku_name(index: int) -> str:
    return f"FLASH-{index:04d}"


def regular_sku_name(index: int) -> str:
    return f"SKU-{index:06d}"


@dataclass(frozen=True)
class Catalogue:
    hot_skus: tuple[str, ...]
    regular_skus: tuple[str, ...]
    locations: tuple[str, ...]
    stock: Mapping[Slot, int]
    as_of: str  # of the initial ERP balances

    @classmethod
    def build(
        cls,
        hot: int,
        regular: int,
        locations: int,
        hot_stock: tuple[int, int],
        regular_stock: tuple[int, int],
        as_of: str,
        seed: int = 11,
    ) -> Catalogue:
        """``hot`` flash-sale SKUs with ``hot_stock`` (min, max) units per location and
        ``regular`` SKUs with ``regular_stock``; stock drawn per SKU and location."""
        if hot < 1 or locations < 1 or regular < 0:
            raise ValueError("at least one hot SKU and one location")
        rng = random.Random(seed)
        hot_skus = tuple(hot_sku_name(i) for i in range(hot))
        regular_skus = tuple(regular_sku_name(i) for i in range(regular))
        names = tuple(location_name(j) for j in range(locations))
        stock: dict[Slot, int] = {}
        for skus, (low, high) in ((hot_skus, hot_stock), (regular_skus, regular_stock)):
            for sku in skus:
                for location in names:
                    stock[(sku, location)] = rng.randint(low, high)
        return cls(hot_skus, regular_skus, names, stock, as_of)

    def balances(self, run_id: str) -> Iterator[dict[str, Any]]:
        """The initial ERP balance of every SKU and location."""
        for n, ((sku, location), on_hand) in enumerate(self.stock.items()):
            yield {
                "type": "erp.balance",
                "event_id": f"{run_id}-seed-{n}",
                "sku": sku,
                "location_id": location,
                "on_hand": on_hand,
                "as_of": self.as_of,
            }

    def to_data(self) -> dict[str, Any]:
        return {
            "hot_skus": list(self.hot_skus),
            "regular_skus": list(self.regular_skus),
            "locations": list(self.locations),
            "stock": [[sku, location, units] for (sku, location), units in self.stock.items()],
            "as_of": self.as_of,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Catalogue:
        return cls(
            tuple(data["hot_skus"]),
            tuple(data["regular_skus"]),
            tuple(data["locations"]),
            {(sku, location): int(units) for sku, location, units in data["stock"]},
            str(data["as_of"]),
        )


@dataclass
class Ledger:
    """What the simulated channels took, per SKU and location, and when."""

    sold: dict[Slot, int] = field(default_factory=lambda: defaultdict(int))
    reserved: dict[Slot, int] = field(default_factory=lambda: defaultdict(int))
    shopify: dict[Slot, int] = field(default_factory=lambda: defaultdict(int))
    # store sales per SKU and location: (occurred_at in µs, quantity)
    sales: dict[Slot, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    # every claim in the order made: (at in µs, channel, sku, location, quantity)
    claims: list[tuple[int, str, str, str, int]] = field(default_factory=list)
    # Shopify checkouts the shop refused (sold out there), per location
    refused: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # the online checkouts' outcomes through the reserve API
    online: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    expiry_us: int = 0  # the latest expiry of a cart left to expire

    def sale(self, sku: str, location: str, quantity: int, occurred_at_us: int) -> None:
        self.sold[(sku, location)] += quantity
        self.sales[(sku, location)].append((occurred_at_us, quantity))
        self.claims.append((occurred_at_us, STORE, sku, location, quantity))

    def reservation(self, sku: str, location: str, quantity: int, at_us: int = 0) -> None:
        """An online hold (a line of a reservation answered 201)."""
        self.reserved[(sku, location)] += quantity
        self.claims.append((at_us, ONLINE, sku, location, quantity))

    def freed(self, sku: str, location: str, quantity: int, at_us: int) -> None:
        """An online hold given back at ``at_us``: its cart released or expired."""
        self.reserved[(sku, location)] -= quantity
        self.claims.append((at_us, ONLINE, sku, location, -quantity))

    def count(self, outcome: str, n: int = 1) -> None:
        """The online checkouts' outcomes (``made``, ``refused``, ``released``, ...)."""
        self.online[outcome] += n

    def expiring_until(self, expires_at_us: int) -> None:
        """A cart left to expire: the ledger's ``reserved`` holds once it has."""
        self.expiry_us = max(self.expiry_us, expires_at_us)

    def shopify_order(self, sku: str, location: str, quantity: int, at_us: int) -> None:
        """A checkout the Shopify shop accepted (its order webhook comes back to us as
        a reservation)."""
        self.shopify[(sku, location)] += quantity
        self.claims.append((at_us, SHOPIFY, sku, location, quantity))

    def shopify_refused(self, location: str) -> None:
        self.refused[location] += 1

    def sold_until(self, sku: str, location: str, until_us: int) -> int:
        """Units the stores sold at the SKU and location with ``occurred_at`` at or
        before ``until_us``: what an ERP balance as of then already contains."""
        return sum(
            q for occurred_at, q in self.sales.get((sku, location), ()) if occurred_at <= until_us
        )

    def to_data(self) -> dict[str, Any]:
        return {
            "sold": [[s, loc, n] for (s, loc), n in self.sold.items()],
            "reserved": [[s, loc, n] for (s, loc), n in self.reserved.items()],
            "shopify": [[s, loc, n] for (s, loc), n in self.shopify.items()],
            "shopify_refused": dict(self.refused),
            "online": dict(self.online),
            "expiry_us": self.expiry_us,
            "claims": [list(claim) for claim in self.claims],
        }


def oversell(stock: Mapping[Slot, int], ledger_data: Mapping[str, Any]) -> dict[str, Any]:
    """The run's oversell (module docstring) from the stock and ``Ledger.to_data()``."""
    claimed: dict[Slot, int] = defaultdict(int)
    totals = {STORE: 0, ONLINE: 0, SHOPIFY: 0}
    for key, channel in (("sold", STORE), ("reserved", ONLINE), ("shopify", SHOPIFY)):
        for sku, location, units in ledger_data.get(key, ()):
            claimed[(sku, location)] += units
            totals[channel] += units
    unknown = sorted(f"{s}@{loc}" for s, loc in claimed if (s, loc) not in stock)
    if unknown:
        raise ValueError(f"claims on SKU-locations that have no stock: {unknown[:5]}")
    claims = ledger_data.get("claims", ())
    by_channel = oversold_by_channel(stock, claims)
    if claims:  # in the order made, with the units given back
        over: dict[Slot, int] = defaultdict(int)
        for per_slot in by_channel.values():
            for slot, units in per_slot.items():
                over[slot] += units
    else:
        over = {s: units - stock[s] for s, units in claimed.items() if units > stock[s]}
    return {
        "units_sold_in_stores": totals[STORE],
        "units_reserved_online": totals[ONLINE],
        "units_ordered_on_shopify": totals[SHOPIFY],
        "units_oversold": sum(over.values()),
        "sku_locations_oversold": len(over),
        "sku_locations_claimed": len(claimed),
        "units_oversold_by_channel": {c: sum(by_channel[c].values()) for c in CHANNELS},
        "units_oversold_by_reserve_api": sum(online_oversell(stock, claims).values()),
        "worst": [
            {"sku": s, "location_id": loc, "units": n}
            for (s, loc), n in sorted(over.items(), key=lambda item: (-item[1], item[0]))[:10]
        ],
    }


def oversold_by_channel(
    stock: Mapping[Slot, int], claims: Iterable[Sequence[Any]]
) -> dict[str, dict[Slot, int]]:
    """Channel -> SKU-location -> units oversold by that channel's claims: at each
    SKU-location, claims in the order made (``(at_us, channel, sku, location,
    quantity)``; a tie keeps the ledger's order), each claim's units beyond what the
    earlier ones left (a negative quantity gives units back). Summed over channels, a
    SKU-location's figure is its oversell."""
    by_slot: dict[Slot, list[tuple[int, int, str, int]]] = defaultdict(list)
    for n, (at_us, channel, sku, location, quantity) in enumerate(claims):
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}")
        by_slot[(sku, location)].append((int(at_us), n, str(channel), int(quantity)))
    result: dict[str, dict[Slot, int]] = {c: {} for c in CHANNELS}
    for slot, made in by_slot.items():
        left = stock[slot]
        for _, _, channel, quantity in sorted(made):
            if quantity < 0:
                left -= quantity
                continue
            beyond = quantity - max(0, min(left, quantity))
            left -= quantity
            if beyond:
                result[channel][slot] = result[channel].get(slot, 0) + beyond
    return result


#: Another channel's claim made this long before an online hold has been folded.
KNOWN_AFTER_US = 5_000_000


def online_oversell(
    stock: Mapping[Slot, int],
    claims: Iterable[Sequence[Any]],
    known_after_us: int = KNOWN_AFTER_US,
) -> dict[Slot, int]:
    """SKU-location -> units the online holds took beyond the stock less the online
    holds live then and the other channels' claims made ``known_after_us`` or more
    before (module docstring). The reserve API's guarantee is that this is empty."""
    # Per slot: (when it counts, order at that instant, units, is an online hold).
    # At one instant a hold given back and another channel's known claim come before
    # an online hold (freed before it was placed; folded before it was checked).
    by_slot: dict[Slot, list[tuple[int, int, int, bool]]] = defaultdict(list)
    for at_us, channel, sku, location, quantity in claims:
        units = int(quantity)
        if channel == ONLINE:
            by_slot[(sku, location)].append((int(at_us), int(units > 0), units, units > 0))
        elif channel in CHANNELS:
            by_slot[(sku, location)].append((int(at_us) + known_after_us, 0, units, False))
        else:
            raise ValueError(f"unknown channel {channel!r}")
    result: dict[Slot, int] = {}
    for slot, events in by_slot.items():
        taken = 0  # online units live plus the other channels' known claims
        for _, _, units, online_hold in sorted(events):
            if online_hold:
                beyond = units - max(0, min(stock[slot] - taken, units))
                if beyond:
                    result[slot] = result.get(slot, 0) + beyond
            taken += units
    return result
