"""The journal (``availability.journal``): what the worker writes to the table's
changelog, and the state folded back from it on recovery."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from availability.events import Event, event_from_dict
from availability.journal import (
    CorruptEntry,
    JournalEntry,
    event_key,
    journal_batch,
    restore,
)
from availability.state import SkuState
from tests.unit.strategies import deliveries, timestamp


def write_journal(
    delivered: list[dict[str, Any]], batch_sizes: list[int]
) -> tuple[dict[str, SkuState], list[JournalEntry]]:
    """Fold a delivery in batches as the worker does; the states and the journal."""
    states: dict[str, SkuState] = {}
    journal: list[JournalEntry] = []
    position = 0
    sizes = iter(batch_sizes)
    while position < len(delivered):
        size = next(sizes, 5)
        batch = delivered[position : position + size]
        position += size
        by_sku: dict[str, list[tuple[Event, bytes]]] = {}
        for raw in batch:
            event = event_from_dict(raw)
            by_sku.setdefault(event.sku, []).append((event, orjson.dumps(raw)))
        for sku, events in by_sku.items():
            state = states.get(sku) or SkuState(sku)
            result = journal_batch(state, events)
            assert not result.failed
            if result.entries:
                states[sku] = state
                journal.extend(result.entries)
    return states, journal


def compact(journal: list[JournalEntry]) -> dict[str, bytes]:
    """What log compaction keeps: the last value per key, deletions removed."""
    latest: dict[str, bytes | None] = {}
    for entry in journal:
        latest[entry.key] = entry.value
    return {key: value for key, value in latest.items() if value is not None}


def restored(entries: list[tuple[str, bytes | None]]) -> dict[str, SkuState]:
    states: dict[str, SkuState] = {}
    for key, value in entries:
        restore(states, key, value)
    return states


def derived(state: SkuState) -> tuple[Any, ...]:
    return (state.moved, state.held, state.expiring, state.line_locations)


batch_sizes = st.lists(st.integers(1, 12), max_size=12)


@settings(max_examples=300)
@given(deliveries(), batch_sizes, st.randoms(use_true_random=False))
def test_the_state_restored_from_the_journal_is_the_folded_state(
    case: Any, sizes: list[int], rnd: Any
) -> None:
    _, delivered = case
    states, journal = write_journal(delivered, sizes)

    # Recovery reads the log as written (deletions included) ...
    from_log = restored([(entry.key, entry.value) for entry in journal])
    assert from_log == states
    # ... or compacted, in any order: the same state, derived sums included.
    kept = list(compact(journal).items())
    rnd.shuffle(kept)
    from_compacted = restored(kept)
    assert from_compacted == states
    for sku, state in states.items():
        assert derived(from_compacted[sku]) == derived(state)
        assert derived(from_log[sku]) == derived(state)


@settings(max_examples=200)
@given(deliveries(), batch_sizes)
def test_a_compacted_journal_holds_no_sale_that_a_baseline_contains(
    case: Any, sizes: list[int]
) -> None:
    _, delivered = case
    states, journal = write_journal(delivered, sizes)
    for key, value in compact(journal).items():
        sku, _, event_id = key.partition(" ")
        if not event_id:
            continue
        event = orjson.loads(value)
        if event["type"] in ("pos.sale", "pos.return") and event.get("disposition") != "damaged":
            baseline = states[sku].baselines.get(event["location_id"])
            assert baseline is None or event_id in states[sku].deltas[event["location_id"]]


def sale(event_id: str, minute: int) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "pos.sale",
        "sku": "S",
        "location_id": "L",
        "quantity": 1,
        "occurred_at": timestamp(minute),
    }


def test_a_covering_erp_balance_deletes_the_sales_it_contains() -> None:
    sales = [sale(f"s{i}", 1) for i in range(100)]
    balance = {
        "event_id": "b",
        "type": "erp.balance",
        "sku": "S",
        "location_id": "L",
        "on_hand": 7,
        "as_of": timestamp(2),
    }
    later = sale("late", 3)
    states, journal = write_journal([*sales, balance, later], [50, 50, 2])
    assert set(compact(journal)) == {"S", event_key("S", "late")}
    assert states["S"].on_hand("L") == 6
    # The deletions come after the baselines that contain them.
    keys = [entry.key for entry in journal]
    assert keys.index("S") < keys.index(event_key("S", "s0"), keys.index("S"))


def test_a_superseded_reservation_created_is_deleted() -> None:
    created = {
        "type": "reservation.created",
        "sku": "S",
        "reservation_id": "R",
        "location_id": "L",
        "quantity": 2,
    }
    first = {**created, "event_id": "c1", "occurred_at": timestamp(1)}
    second = {**created, "event_id": "c2", "occurred_at": timestamp(2), "quantity": 5}
    states, journal = write_journal([first, second], [1, 1])
    assert set(compact(journal)) == {event_key("S", "c2")}
    assert states["S"].reserved(0)[0] == {"L": 5}


def test_unchanged_state_writes_nothing() -> None:
    event = sale("s", 1)
    _, journal = write_journal([event, event, event], [1, 1, 1])
    assert [entry.key for entry in journal] == [event_key("S", "s")]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("S e1", b"not json"),
        ("S e1", orjson.dumps({**sale("other", 1)})),
        ("S", b"[1, 2]"),
    ],
)
def test_an_unreadable_entry_is_refused_with_its_key(key: str, value: bytes) -> None:
    with pytest.raises(CorruptEntry, match=repr(key)):
        restore({}, key, value)
