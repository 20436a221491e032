"""Available to sell (contract section 5) and the per-SKU serving view.

``build_availability`` turns a SKU's state, the rule book and ``now`` into the
figures every read needs, for every channel at once: per location the stock
figures, the safety stock and the buffers of the channels that rules name; any
other channel has buffer 0. ``view`` then answers one read from it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from availability.rules import NO_RULES, RuleBook
from availability.state import SkuState


# Not frozen: a frozen dataclass costs four times as much to build, and one is built
# per SKU and location on every change. Treat instances as immutable all the same.
@dataclass(slots=True)
class LocationAvailability:
    location_id: str
    on_hand: int
    reserved: int
    in_transit: int
    damaged: int
    safety_stock: int
    channel_buffers: Mapping[str, int]

    @property
    def sellable(self) -> int:
        return self.on_hand - self.reserved

    def buffer(self, channel: str) -> int:
        return self.channel_buffers.get(channel, 0)

    def ats(self, channel: str) -> int:
        return max(0, self.sellable - self.safety_stock - self.buffer(channel))

    def to_data(self) -> list[Any]:
        return [
            self.location_id,
            self.on_hand,
            self.reserved,
            self.in_transit,
            self.damaged,
            self.safety_stock,
            dict(sorted(self.channel_buffers.items())),
        ]

    @classmethod
    def from_data(cls, data: list[Any]) -> LocationAvailability:
        return cls(data[0], data[1], data[2], data[3], data[4], data[5], data[6])


@dataclass(slots=True)
class SkuAvailability:  # treat as immutable (see LocationAvailability)
    sku: str
    locations: tuple[LocationAvailability, ...]  # sorted by location_id
    next_expiry: int | None  # when a reservation of this SKU next expires, if any

    def channels(self) -> list[str]:
        """Channels that have a buffer somewhere; others all look alike (buffer 0)."""
        named: set[str] = set()
        for location in self.locations:
            named.update(location.channel_buffers)
        return sorted(named)

    def to_data(self) -> dict[str, Any]:
        return {"sku": self.sku, "locations": [loc.to_data() for loc in self.locations]}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> SkuAvailability:
        return cls(
            data["sku"],
            tuple(LocationAvailability.from_data(loc) for loc in data["locations"]),
            None,
        )


def build_availability(state: SkuState, rules: RuleBook, now: int) -> SkuAvailability:
    # Runs for every changed SKU and each of its locations: written for speed, with
    # SkuState.locations and on_hand and RuleBook.resolve inlined or skipped where
    # they can be.
    baselines = state.baselines
    deltas = state.deltas
    moved = state.moved
    transit = state.transit
    damaged = state.damaged
    found = set(state.settled)
    found.update(state.pending)
    found.update(deltas)
    found.update(damaged)
    found.update(transit)
    found.update(state.line_locations)
    found.update(state.carried_locations)
    reserved, next_expiry = state.reserved(now)
    sku = state.sku
    resolve = rules.resolve if len(rules) else None
    locations = []
    for location_id in sorted(found):
        baseline = baselines.get(location_id)
        on_hand = moved.get(location_id, 0)
        if baseline is not None:
            on_hand += baseline.on_hand
        resolved = NO_RULES if resolve is None else resolve(sku, location_id)
        locations.append(
            LocationAvailability(
                location_id,
                on_hand,
                reserved.get(location_id, 0),
                max(0, transit.get(location_id, 0)),
                damaged.get(location_id, 0),
                resolved.safety_stock,
                resolved.channel_buffers,
            )
        )
    return SkuAvailability(sku, tuple(locations), next_expiry)


def location_view(location: LocationAvailability, channel: str) -> dict[str, Any]:
    return {
        "location_id": location.location_id,
        "on_hand": location.on_hand,
        "reserved": location.reserved,
        "in_transit": location.in_transit,
        "damaged": location.damaged,
        "safety_stock": location.safety_stock,
        "buffer": location.buffer(channel),
        "ats": location.ats(channel),
    }


def view(
    availability: SkuAvailability, channel: str, location_id: str | None = None
) -> dict[str, Any]:
    """The read answer of contract section 6 for one SKU and channel."""
    location_ids = None if location_id is None else (location_id,)
    return watched_view(availability.sku, availability, channel, location_ids)


def watched_view(
    sku: str,
    availability: SkuAvailability | None,
    channel: str,
    location_ids: Collection[str] | None,
) -> dict[str, Any]:
    """What a watch shows of a SKU: ``view`` narrowed to ``location_ids`` (None: all).

    A SKU never seen shows ats 0 and no locations, on the watch's channel.
    """
    if availability is None:
        return {"sku": sku, "channel": channel, "ats": 0, "locations": []}
    locations = [
        location_view(loc, channel)
        for loc in availability.locations
        if location_ids is None or loc.location_id in location_ids
    ]
    return {
        "sku": sku,
        "channel": channel,
        "ats": sum(loc["ats"] for loc in locations),
        "locations": locations,
    }


def unknown_sku_view(sku: str) -> dict[str, Any]:
    """A batch item for a SKU that has never been seen."""
    return {"sku": sku, "ats": 0, "locations": []}


def has_location(state: SkuState, location_id: str) -> bool:
    """Whether the SKU has state at the location (``SkuState.locations`` for one)."""
    return (
        location_id in state.settled
        or location_id in state.pending
        or location_id in state.deltas
        or location_id in state.damaged
        or location_id in state.transit
        or location_id in state.line_locations
        or location_id in state.carried_locations
    )


def location_availability(
    state: SkuState, rules: RuleBook, now: int, location_ids: Collection[str]
) -> tuple[list[LocationAvailability | str], int | None]:
    """``build_availability`` for these locations only, sorted (a location the SKU has
    no state at is its id alone), and when a reservation of the SKU next expires.
    Costs the locations asked and the SKU's expiring lines, not its location count:
    a change at one store of a thousand recomputes that store."""
    reserved, next_expiry = state.reserved(now)
    sku = state.sku
    resolve = rules.resolve if len(rules) else None
    answers: list[LocationAvailability | str] = []
    for location_id in sorted(location_ids):
        if not has_location(state, location_id):
            answers.append(location_id)
            continue
        resolved = NO_RULES if resolve is None else resolve(sku, location_id)
        answers.append(
            LocationAvailability(
                location_id,
                state.on_hand(location_id),
                reserved.get(location_id, 0),
                max(0, state.transit.get(location_id, 0)),
                state.damaged.get(location_id, 0),
                resolved.safety_stock,
                resolved.channel_buffers,
            )
        )
    return answers, next_expiry


def merge_locations(
    base: SkuAvailability | None,
    sku: str,
    whole: bool,
    changed: Collection[LocationAvailability],
    removed: Collection[str] = (),
) -> SkuAvailability:
    """``base`` with ``changed`` put in (replacing the same locations) and ``removed``
    taken out, sorted by location; only ``changed`` when ``whole`` (or no base)."""
    by_id = {} if whole or base is None else {loc.location_id: loc for loc in base.locations}
    for location_id in removed:
        by_id.pop(location_id, None)
    for loc in changed:
        by_id[loc.location_id] = loc
    return SkuAvailability(sku, tuple(by_id[key] for key in sorted(by_id)), None)
