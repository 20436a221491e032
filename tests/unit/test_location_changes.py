"""A change computed at the locations its events name (``availability.changes``,
``ats.location_availability``) and merged onto the figures before it
(``ats.merge_locations``) always equals the SKU's figures computed whole: what lets
the serving layer write, announce and publish only those locations."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from availability.ats import (
    LocationAvailability,
    SkuAvailability,
    build_availability,
    location_availability,
    merge_locations,
)
from availability.changes import event_locations
from availability.events import TransferShipped, parse_event
from availability.identifiers import parse_timestamp
from availability.rules import Rule, RuleBook
from availability.state import SkuState, fold
from tests.unit.strategies import event_sets, timestamp

RULES = RuleBook(
    [
        Rule("everywhere", safety_stock=1),
        Rule("dc", location_id="DC-1", channel_buffers={"online": 2}),
        Rule("a-s1", sku="SKU-A", location_id="S-1", safety_stock=3, channel_buffers={"pos": 1}),
    ]
)


@settings(max_examples=300)
@given(event_sets(), st.integers(0, 59))
def test_merging_the_named_locations_gives_the_whole_figures(
    events: list[dict[str, Any]], minute: int
) -> None:
    now = parse_timestamp(timestamp(minute))
    states: dict[str, SkuState] = {}
    shown: dict[str, SkuAvailability] = {}
    for raw in events:
        event = parse_event(orjson.dumps(raw))
        state = states.setdefault(event.sku, SkuState(event.sku))
        named = event_locations(state, event)
        fold(state, event)
        named |= event_locations(state, event)
        located, next_expiry = location_availability(state, RULES, now, named)
        changed = [loc for loc in located if isinstance(loc, LocationAvailability)]
        removed = [loc for loc in located if isinstance(loc, str)]
        shown[event.sku] = merge_locations(shown.get(event.sku), event.sku, False, changed, removed)
        whole = build_availability(state, RULES, now)
        assert shown[event.sku].locations == whole.locations
        assert next_expiry == whole.next_expiry


def test_a_location_with_no_state_left_is_named_as_removed() -> None:
    state = SkuState("SKU-A")
    shipped = TransferShipped("t1", "SKU-A", "T1", "S-1", "S-2", 3, 100)
    fold(state, shipped)
    located, _ = location_availability(state, RuleBook(), 200, ["S-2", "S-9"])
    assert [loc if isinstance(loc, str) else loc.in_transit for loc in located] == [3, "S-9"]
    assert event_locations(state, shipped) == {"S-1", "S-2"}


def test_merging_keeps_the_locations_sorted_and_whole_replaces() -> None:
    def at(name: str, on_hand: int) -> LocationAvailability:
        return LocationAvailability(name, on_hand, 0, 0, 0, 0, {})

    base = SkuAvailability("A", (at("B", 1), at("D", 2)), None)
    merged = merge_locations(base, "A", False, [at("C", 3), at("B", 4)], ["D"])
    assert merged.locations == (at("B", 4), at("C", 3))
    assert merge_locations(base, "A", True, [at("E", 5)]).locations == (at("E", 5),)
