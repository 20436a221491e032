"""Baseline resets, the settle window, pruning to a horizon, and the fold's rollback
(``availability.state``, ``availability.journal``), against ``tests/reference.py``."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import availability.state as state_module
from availability.ats import build_availability, view
from availability.events import Event, check_time, event_from_dict
from availability.horizon import prune
from availability.identifiers import parse_timestamp
from availability.journal import JournalEntry, journal_batch, prune_entries, restore
from availability.rules import RuleBook
from availability.state import NEVER, SkuState, fold
from tests.reference import recompute
from tests.unit.strategies import NOW_MINUTE, deliveries, timestamp

NOW = parse_timestamp(timestamp(NOW_MINUTE))
# Points in the tests' hour (10:00-10:59) for settle_before and forget_before.
moments = st.builds(lambda m: parse_timestamp(timestamp(m, 15)), st.integers(0, 59))
HORIZON_TYPES = ("transfer.shipped", "transfer.received", "reservation.created",
                 "reservation.released", "reservation.fulfilled")  # fmt: skip


def fold_states(delivered: list[dict[str, Any]], settle_before: int) -> dict[str, SkuState]:
    states: dict[str, SkuState] = {}
    for raw in delivered:
        event = event_from_dict(raw)
        fold(states.setdefault(event.sku, SkuState(event.sku)), event, settle_before=settle_before)
    return dict(sorted(states.items()))


def figures(states: dict[str, SkuState], now: int = NOW) -> dict[str, Any]:
    return {
        sku: view(build_availability(state, RuleBook(), now), "online")
        for sku, state in states.items()
    }


def refused_as_too_old(event: dict[str, Any], forget_before: int) -> bool:
    """What ``check_time`` refuses below the horizon (besides resets and the future)."""
    damaged = event["type"] == "pos.return" and event.get("disposition") == "damaged"
    return (event["type"] in HORIZON_TYPES or damaged) and parse_timestamp(
        event["occurred_at"]
    ) < forget_before


@settings(max_examples=300)
@given(deliveries(), st.randoms(use_true_random=False), moments)
def test_resets_keep_the_fold_order_independent_for_any_settle_window(
    case: Any, rnd: Any, settle_before: int
) -> None:
    distinct, delivered = case
    in_order = fold_states(distinct, settle_before)
    again = list(delivered)
    rnd.shuffle(again)
    assert fold_states(delivered, settle_before) == in_order
    assert fold_states(again + again, settle_before) == in_order
    expected = recompute(distinct, NOW, settle_before=settle_before)
    assert figures(in_order) == dict(sorted(expected.items()))


@settings(max_examples=200)
@given(deliveries(), moments, moments)
def test_settling_later_is_settling_at_once(case: Any, first: int, second: int) -> None:
    """The worker's settle_before moves forward between batches; pruning with the
    later one gives the state a fold with it gives."""
    _, delivered = case
    early, late = sorted((first, second))
    states = fold_states(delivered, early)
    for state in states.values():
        prune(state, settle_before=late, forget_before=NEVER)
    assert states == fold_states(delivered, late)


def test_a_reset_voids_a_future_baseline_and_counts_what_it_hid() -> None:
    sku = {"sku": "S"}
    pinned = {**sku, "event_id": "b-2099", "type": "erp.balance", "location_id": "L",
              "on_hand": 500, "as_of": "2099-01-01T00:00:00Z"}  # fmt: skip
    sale = {**sku, "event_id": "s1", "type": "pos.sale", "location_id": "L", "quantity": 2,
            "occurred_at": timestamp(20)}  # fmt: skip
    reset = {**sku, "event_id": "r1", "type": "erp.baseline_reset", "location_id": "L",
             "on_hand": 40, "as_of": timestamp(10), "voids": ["b-2099"],
             "operator": "ops"}  # fmt: skip
    settle = parse_timestamp(timestamp(5))
    for order in ([pinned, sale, reset], [reset, sale, pinned], [sale, pinned, reset]):
        (state,) = fold_states(order, settle).values()
        # The pinned balance hid the sale; the reset brings it back: 40 - 2.
        assert state.on_hand("L") == 38
        assert state.baselines["L"].event_id == "r1"
    # Before the reset the pinned balance hides every sale.
    (pinned_only,) = fold_states([pinned, sale], settle).values()
    assert pinned_only.on_hand("L") == 500


def journal_of(
    delivered: list[dict[str, Any]], settle_before: int
) -> tuple[dict[str, SkuState], list[JournalEntry]]:
    states: dict[str, SkuState] = {}
    journal: list[JournalEntry] = []
    for raw in delivered:
        event = event_from_dict(raw)
        state = states.setdefault(event.sku, SkuState(event.sku))
        result = journal_batch(state, [(event, orjson.dumps(raw))], settle_before=settle_before)
        assert not result.failed
        journal.extend(result.entries)
    return states, journal


def restored(entries: list[JournalEntry], settle_before: int) -> dict[str, SkuState]:
    states: dict[str, SkuState] = {}
    for entry in entries:
        restore(states, entry.key, entry.value, settle_before=settle_before)
    return dict(sorted(states.items()))


def compacted(journal: list[JournalEntry]) -> list[JournalEntry]:
    latest: dict[str, bytes | None] = {}
    for entry in journal:
        latest.pop(entry.key, None)  # compaction keeps a key's last value, in its place
        latest[entry.key] = entry.value
    return [JournalEntry(k, v) for k, v in latest.items() if v is not None]


@settings(max_examples=300)
@given(deliveries(), moments, moments)
def test_pruning_changes_no_figure_and_the_journal_follows(
    case: Any, settle_before: int, forget_before: int
) -> None:
    distinct, delivered = case
    states, journal = journal_of(delivered, settle_before)
    # The worker's forget_before (now - horizon) is always in its past.
    now = max(NOW, forget_before)
    before = figures(states, now)
    for state in states.values():
        entries = prune_entries(state, settle_before=settle_before, forget_before=forget_before)
        journal.extend(entries or [])
    # Nothing forgotten counted at any time from the horizon on.
    assert figures(states, now) == before
    assert before == figures(fold_states(distinct, settle_before), now)
    # The journal, whole or compacted, gives the same figures back (a SKU that had
    # nothing but forgotten lines may be gone: it showed nothing).
    shown = {sku: got for sku, got in before.items() if got["locations"]}
    for entries in (journal, compacted(journal)):
        back = figures(restored(entries, settle_before), now)
        assert {sku: got for sku, got in back.items() if got["locations"]} == shown
    # Compacted, it holds no more than the pruned state does: a forgotten line comes
    # back only as an empty closed one, from a fulfilment whose entry is kept for its
    # on-hand delta (the next prune forgets it again).
    kept = restored(compacted(journal), settle_before)
    for sku, state in states.items():
        if sku not in kept:
            assert not state.applied and not state.reservations
            continue
        assert set(kept[sku].applied) == set(state.applied)
        for reservation_id, line in kept[sku].reservations.items():
            if reservation_id not in state.reservations:
                assert line.hold is None and line.closer is not None
                assert line.closer.delta_at is not None
            else:
                assert line == state.reservations[reservation_id]


@settings(max_examples=300)
@given(deliveries(), moments, moments)
def test_a_late_duplicate_after_pruning_changes_nothing(
    case: Any, settle_before: int, forget_before: int
) -> None:
    """The argument of the module docstring: whatever the state forgot is older than
    the horizon, and so is any repeat of it, which the worker refuses (too_old)."""
    _, delivered = case
    states = fold_states(delivered, settle_before)
    for state in states.values():
        prune(state, settle_before=settle_before, forget_before=forget_before)
    pruned = copy.deepcopy(states)
    now = max(NOW, forget_before)
    before = figures(states, now)
    for raw in delivered:
        if refused_as_too_old(raw, forget_before):
            continue
        event = event_from_dict(raw)
        fold(states[event.sku], event, settle_before=settle_before)
    assert figures(states, now) == before
    assert states == pruned


def test_a_closed_line_and_old_transfer_ids_leave_the_state() -> None:
    sku = {"sku": "S"}
    events = [
        {**sku, "event_id": "c", "type": "reservation.created", "reservation_id": "R",
         "location_id": "L", "quantity": 3, "occurred_at": timestamp(1)},
        {**sku, "event_id": "x", "type": "reservation.released", "reservation_id": "R",
         "location_id": "L", "occurred_at": timestamp(2)},
        {**sku, "event_id": "t", "type": "transfer.shipped", "transfer_id": "T",
         "from_location": "A", "to_location": "B", "quantity": 4, "occurred_at": timestamp(3)},
        {**sku, "event_id": "d", "type": "pos.return", "location_id": "L", "quantity": 1,
         "occurred_at": timestamp(3), "disposition": "damaged"},
    ]  # fmt: skip
    states, _ = journal_of(events, NEVER)
    state = states["S"]
    entries = prune_entries(state, settle_before=NEVER, forget_before=parse_timestamp(timestamp(4)))
    assert entries is not None
    assert state.reservations == {} and state.applied == {}
    assert (state.transit["B"], state.damaged["L"]) == (4, 1)
    # The line's create deleted before its release; the transfer's entry stays for
    # its on-hand delta (no ERP balance contains it yet).
    deleted = [e.key for e in entries if e.value is None]
    assert deleted == ["S d", "S c", "S x"]
    assert state.lingering == {"t": "A"}
    assert "L" in state.locations()
    # A balance later contains the transfer's delta: its entry goes too.
    balance = {**sku, "event_id": "b", "type": "erp.balance", "location_id": "A",
               "on_hand": 9, "as_of": timestamp(5)}  # fmt: skip
    result = journal_batch(state, [(event_from_dict(balance), orjson.dumps(balance))])
    assert JournalEntry("S t", None) in result.entries
    assert state.lingering == {}


def test_an_old_duplicate_of_a_forgotten_transfer_is_refused_before_the_fold() -> None:
    shipped = event_from_dict(
        {
            "sku": "S",
            "event_id": "t",
            "type": "transfer.shipped",
            "transfer_id": "T",
            "from_location": "A",
            "to_location": "B",
            "quantity": 4,
            "occurred_at": timestamp(3),
        }
    )
    horizon = 60 * 1_000_000
    now = parse_timestamp(timestamp(5))
    from availability.events import InvalidEvent

    with pytest.raises(InvalidEvent) as refused:
        check_time(shipped, now, 300 * 1_000_000, horizon)
    assert refused.value.kind == "too_old"
    # Had it reached the fold, its transit part would be taken as carried.
    state = SkuState("S")
    fold(state, shipped)
    prune(state, settle_before=NEVER, forget_before=now - horizon)
    assert not fold(state, shipped) and state.transit == {"B": 4}


@settings(max_examples=200)
@given(deliveries(), st.integers(0, 60), st.integers(0, 40))
def test_a_fold_that_fails_half_way_leaves_no_trace(
    case: Any, failing_call: int, split: int
) -> None:
    """Every change goes through the undo log: a failure at any point of any event's
    fold rolls that event back exactly, and the batch goes on without it."""
    _, delivered = case
    first, rest = delivered[:split], delivered[split:]
    states = fold_states(first, NEVER)
    calls = [0]
    real_put = state_module._put

    def failing_put(*args: Any) -> None:
        calls[0] += 1
        if calls[0] == failing_call:
            raise RuntimeError("injected")
        real_put(*args)

    failed: list[Event] = []
    kept: list[dict[str, Any]] = []
    state_module._put = failing_put  # type: ignore[assignment]
    try:
        for raw in rest:
            event = event_from_dict(raw)
            state = states.setdefault(event.sku, SkuState(event.sku))
            result = journal_batch(state, [(event, orjson.dumps(raw))], settle_before=NEVER)
            if result.failed:
                failed.append(event)
            else:
                kept.append(raw)
    finally:
        state_module._put = real_put  # type: ignore[assignment]
    assert len(failed) <= 1
    expected = fold_states(first + kept, NEVER)
    assert {sku: s for sku, s in states.items() if sku in expected} == expected
    assert all(s == SkuState(sku) for sku, s in states.items() if sku not in expected)
