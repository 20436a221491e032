"""Hold accounting and placement (availability.holds)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from availability.ats import LocationAvailability, SkuAvailability, merge_locations
from availability.holds import (
    Hold,
    LineRequest,
    ReservationRequest,
    duplicate_skus,
    free_units,
    held_by_location,
    line_event_id,
    most_free,
    pending_deadline,
    placement_order,
    published_deadline,
    with_held,
    with_holds,
)
from infra.records import decode_change, decode_held, location_data

LOCATIONS = ["DC-1", "S-1", "S-2"]
CHANNELS = ["online", "store"]


@st.composite
def location_figures(draw: st.DrawFn, location_id: str) -> LocationAvailability:
    return LocationAvailability(
        location_id,
        draw(st.integers(-5, 30)),
        draw(st.integers(0, 10)),
        0,
        0,
        draw(st.integers(0, 5)),
        draw(st.dictionaries(st.sampled_from(CHANNELS), st.integers(0, 5))),
    )


@st.composite
def skus(draw: st.DrawFn) -> SkuAvailability:
    chosen = draw(st.lists(st.sampled_from(LOCATIONS), min_size=1, max_size=3, unique=True))
    locations = tuple(draw(location_figures(loc)) for loc in sorted(chosen))
    return SkuAvailability("SKU-A", locations, None)


holds_lists = st.lists(
    st.builds(
        Hold,
        st.sampled_from(["R1", "R2", "R3", "R4"]),
        st.sampled_from(LOCATIONS),
        st.integers(1, 5),
        st.integers(900, 1100),
    ),
    max_size=6,
)


def _location(availability: SkuAvailability, location_id: str) -> LocationAvailability:
    return next(loc for loc in availability.locations if loc.location_id == location_id)


def test_hold_value_round_trips() -> None:
    hold = Hold("R-1", "DC:1/a", 7, 1_764_000_000_123)
    assert hold.encode() == b"DC:1/a 7 1764000000123"
    assert Hold.decode("R-1", hold.encode()) == hold


def test_expired_holds_count_for_nothing() -> None:
    holds = [Hold("R1", "S-1", 3, 1000), Hold("R2", "S-1", 2, 1001), Hold("R3", "S-2", 4, 999)]
    assert held_by_location(holds, 1000) == {"S-1": 2}
    assert held_by_location(holds, 998) == {"S-1": 5, "S-2": 4}


@given(skus(), holds_lists, st.sampled_from(CHANNELS))
def test_reads_count_live_holds_as_reserved(
    availability: SkuAvailability, holds: list[Hold], channel: str
) -> None:
    now = 1000
    held = held_by_location(holds, now)
    shown = with_holds(availability, holds, now)
    for loc, seen in zip(availability.locations, shown.locations, strict=True):
        extra = held.get(loc.location_id, 0)
        assert seen.reserved == loc.reserved + extra
        assert seen.ats(channel) == max(0, free_units(loc, channel, extra))


@given(skus(), st.sampled_from(CHANNELS))
def test_without_holds_free_units_are_the_ats(availability: SkuAvailability, channel: str) -> None:
    for loc in availability.locations:
        assert max(0, free_units(loc, channel, 0)) == loc.ats(channel)


@given(skus(), holds_lists, st.sampled_from(CHANNELS))
def test_placement_prefers_the_most_free_units(
    availability: SkuAvailability, holds: list[Hold], channel: str
) -> None:
    held = held_by_location(holds, 1000)
    order = placement_order(availability, channel, held)
    free = {
        loc.location_id: free_units(loc, channel, held.get(loc.location_id, 0))
        for loc in availability.locations
    }
    assert all(free[loc] > 0 for loc in order)
    assert set(order) == {loc for loc, units in free.items() if units > 0}
    ranks = [(-free[loc], loc) for loc in order]
    assert ranks == sorted(ranks)
    best = most_free(availability, channel, held, None)
    assert best == max([0, *free.values()])
    if order:
        assert free[order[0]] == best


def test_placement_breaks_ties_by_location_id() -> None:
    def loc(location_id: str, on_hand: int) -> LocationAvailability:
        return LocationAvailability(location_id, on_hand, 0, 0, 0, 0, {})

    sku = SkuAvailability("A", (loc("DC-1", 4), loc("S-1", 6), loc("S-2", 6)), None)
    assert placement_order(sku, "online", {}) == ["S-1", "S-2", "DC-1"]
    assert placement_order(sku, "online", {"S-1": 3}) == ["S-2", "DC-1", "S-1"]
    assert placement_order(None, "online", {}) == []
    assert most_free(sku, "online", {"S-2": 1}, "S-2") == 5
    assert most_free(sku, "online", {}, "NOWHERE") == 0


@given(
    skus(),
    st.sampled_from(CHANNELS),
    st.lists(st.tuples(st.integers(1, 6), st.sampled_from([None, *LOCATIONS])), max_size=30),
)
def test_holds_placed_by_the_check_never_exceed_the_ats(
    availability: SkuAvailability,
    channel: str,
    attempts: list[tuple[int, str | None]],
) -> None:
    """Guarantee 1 in arithmetic: placing holds one after another, each only where it
    fits, never holds more at a location than its ATS for the channel."""
    now = 1000
    holds: list[Hold] = []
    for number, (quantity, location_id) in enumerate(attempts):
        held = held_by_location(holds, now)
        candidates = (
            placement_order(availability, channel, held) if location_id is None else [location_id]
        )
        for candidate in candidates:
            loc = next((x for x in availability.locations if x.location_id == candidate), None)
            if loc is not None and quantity <= free_units(loc, channel, held.get(candidate, 0)):
                holds.append(Hold(f"R{number}", candidate, quantity, now + 10))
                break
        else:
            assert quantity > most_free(availability, channel, held, location_id)
    total = held_by_location(holds, now)
    for location_id, units in total.items():
        assert units <= _location(availability, location_id).ats(channel)


def test_deadlines_stop_at_the_window_or_the_expiry() -> None:
    assert pending_deadline(1_000, 100_000, 30_000) == 31_000
    assert pending_deadline(1_000, 20_000, 30_000) == 20_000
    assert published_deadline(1_000, 100_000, 60_000) == 61_000
    assert published_deadline(1_000, 40_000, 60_000) == 40_000


def test_fingerprint_ignores_line_order_only() -> None:
    a = LineRequest("A", 1)
    b = LineRequest("B", 2, "S-1")
    first = ReservationRequest("R1", "online", 600, (a, b))
    assert first.fingerprint() == ReservationRequest("R1", "online", 600, (b, a)).fingerprint()
    others = [
        ReservationRequest("R2", "online", 600, (a, b)),
        ReservationRequest("R1", "store", 600, (a, b)),
        ReservationRequest("R1", "online", 601, (a, b)),
        ReservationRequest("R1", "online", 600, (a, LineRequest("B", 3, "S-1"))),
        ReservationRequest("R1", "online", 600, (a, LineRequest("B", 2))),
    ]
    assert len({first.fingerprint(), *(other.fingerprint() for other in others)}) == 6


def test_duplicate_skus_are_named_once() -> None:
    lines = [LineRequest("A", 1), LineRequest("B", 1), LineRequest("A", 2), LineRequest("A", 3)]
    assert duplicate_skus(lines) == ["A"]
    assert duplicate_skus(lines[:2]) == []


def test_line_event_ids_are_stable_and_short() -> None:
    long_id = "r" * 128
    long_sku = "s" * 128
    first = line_event_id(long_id, long_sku, "created", 5)
    assert first == line_event_id(long_id, long_sku, "created", 5)
    assert len(first) <= 128
    assert first != line_event_id(long_id, long_sku, "created", 6)
    assert first != line_event_id(long_id, long_sku, "released", 5)


@given(skus(), holds_lists)
def test_a_change_announced_with_its_holds_reads_back_as_the_served_figures(
    availability: SkuAvailability, holds: list[Hold]
) -> None:
    """``<version> <=|+> <locations>[ <held>]`` on a SKU's channel
    (infra.records.decode_change), merged into the figures held, gives what reads
    show: the folded figures with the live holds counted as reserved; the same JSON of
    held units the change feed's records are computed with."""
    now = 1000
    held = held_by_location(holds, now)
    data = b"[" + b",".join(location_data(loc) for loc in availability.locations) + b"]"
    message = b"%d = " % 42 + data
    if held:
        message += b" " + orjson.dumps(held)
    change = decode_change(message)
    assert (change.version, change.whole, change.removed) == (42, True, ())
    folded = merge_locations(None, "SKU-A", change.whole, change.changed)
    shown = with_held(folded, change.held)
    assert shown == with_holds(availability, holds, now) == with_held(availability, held)
    assert decode_held(b"") == {}
    # A change of one location merged onto the figures it follows; another removed.
    first, *rest = availability.locations
    moved = LocationAvailability(first.location_id, first.on_hand + 1, 0, 0, 0, 0, {})
    change = decode_change(b"43 + [" + location_data(moved) + b',["GONE"]]')
    assert (change.version, change.whole, change.removed) == (43, False, ("GONE",))
    merged = merge_locations(availability, "SKU-A", False, change.changed, change.removed)
    assert merged.locations == (moved, *rest)


def test_an_unreadable_change_is_refused() -> None:
    for message in (b"7", b"7 = [] {} extra", b"x = []", b"7 * []", b'7 + {"a":1}'):
        with pytest.raises((ValueError, KeyError, TypeError)):
            decode_change(message)
