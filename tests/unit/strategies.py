"""Hypothesis strategies for valid contract events (as JSON-ready dicts).

Small pools of SKUs, locations, times and reservation ids make collisions (same
baseline time, release before create, ...) common.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

SKUS = ["SKU-A", "SKU-B"]
LOCATIONS = ["DC-1", "S-1", "S-2"]
BASE = "2026-11-22T10:{:02d}:{:02d}.000Z"
NOW_MINUTE = 30  # "now" in the tests is 10:30:00


def timestamp(minute: int, second: int = 0) -> str:
    return BASE.format(minute, second)


times = st.builds(timestamp, st.integers(0, 59), st.sampled_from([0, 30]))
quantities = st.integers(1, 20)
locations = st.sampled_from(LOCATIONS)
reservation_ids = st.sampled_from(["R1", "R2", "R3", "R4"])


def _event(kind: str, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"type": st.just(kind), "sku": st.sampled_from(SKUS), **fields})


#: The ids event_sets gives (a reset names some of them in ``voids``).
EVENT_IDS = [f"e{i:03d}" for i in range(40)]

baseline_resets = _event(
    "erp.baseline_reset",
    location_id=locations,
    on_hand=st.integers(0, 100),
    as_of=times,
    voids=st.lists(st.sampled_from(EVENT_IDS), max_size=3),
    operator=st.just("op"),
)

events = st.one_of(
    _event("erp.balance", location_id=locations, on_hand=st.integers(0, 100), as_of=times),
    baseline_resets,
    _event("pos.sale", location_id=locations, quantity=quantities, occurred_at=times),
    _event(
        "pos.return",
        location_id=locations,
        quantity=quantities,
        occurred_at=times,
        disposition=st.sampled_from(["sellable", "damaged"]),
    ),
    _event(
        "transfer.shipped",
        transfer_id=st.sampled_from(["T1", "T2"]),
        from_location=locations,
        to_location=locations,
        quantity=quantities,
        occurred_at=times,
    ),
    _event(
        "transfer.received",
        transfer_id=st.sampled_from(["T1", "T2"]),
        from_location=locations,
        to_location=locations,
        quantity=quantities,
        occurred_at=times,
    ),
    _event(
        "reservation.created",
        reservation_id=reservation_ids,
        location_id=locations,
        quantity=quantities,
        occurred_at=times,
        expires_at=st.one_of(st.none(), times),
    ),
    _event(
        "reservation.released",
        reservation_id=reservation_ids,
        location_id=locations,
        occurred_at=times,
    ),
    _event(
        "reservation.fulfilled",
        reservation_id=reservation_ids,
        location_id=locations,
        quantity=quantities,
        occurred_at=times,
    ),
)


@st.composite
def event_sets(draw: st.DrawFn, max_size: int = 40) -> list[dict[str, Any]]:
    """Distinct events, each with its own event_id."""
    drawn = draw(st.lists(events, max_size=max_size))
    return [{"event_id": f"e{i:03d}", **event} for i, event in enumerate(drawn)]


@st.composite
def deliveries(
    draw: st.DrawFn, max_size: int = 40
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the distinct events, one delivery of them: shuffled, some more than once)."""
    distinct = draw(event_sets(max_size))
    repeats = draw(st.lists(st.sampled_from(distinct), max_size=10)) if distinct else []
    delivered = draw(st.permutations(distinct + repeats))
    return distinct, delivered
