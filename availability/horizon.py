"""Bounded state: what ``prune`` removes from a SKU's state, and why nothing it
removes can count again (``availability.state`` has the argument; README "State and
recovery").

``prune`` settles the baseline candidates that the settle window has overtaken, and
forgets what is older than ``forget_before``: reservation lines that are closed or
expired and whose every event is older, and the ids of transfer legs and damaged
returns older than it (what they added is *carried*). It goes through the same
undoable helpers as the fold.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from availability.state import (
    SkuState,
    _beats,
    _pop,
    _put,
    _recount,
    _withdraw,
)


def _set_forgotten_before(state: SkuState, value: int) -> None:
    # An attribute, not a mapping: noted in the undo log through a one-key stand-in.
    _put(state, _ForgottenBefore(state), "value", value)


class _ForgottenBefore(MutableMapping[str, int]):
    """``state.forgotten_before`` seen as a one-key mapping, for the undo log."""

    def __init__(self, state: SkuState) -> None:
        self._state = state

    def __getitem__(self, key: str) -> int:
        return self._state.forgotten_before

    def __setitem__(self, key: str, value: int) -> None:
        self._state.forgotten_before = value

    def __delitem__(self, key: str) -> None:  # pragma: no cover - never deleted
        raise KeyError(key)

    def __iter__(self) -> Any:
        return iter(("value",))

    def __len__(self) -> int:
        return 1


@dataclass(slots=True)
class Pruned:
    """What ``prune`` changed: whether the SKU's summary record must be rewritten
    (baselines or carried sums), and the events whose journal entries are redundant,
    in the order to delete them."""

    summary_changed: bool = False
    redundant: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.summary_changed or bool(self.redundant)


def prune(state: SkuState, *, settle_before: int, forget_before: int) -> Pruned:
    """Settle the candidates that ``settle_before`` has overtaken, and forget what is
    older than ``forget_before`` (the module docstring says what and why). The
    figures at any ``now >= forget_before`` do not change."""
    result = Pruned()
    for location_id in list(state.pending):
        pending = state.pending[location_id]
        old = [c for c in pending.values() if c.as_of <= settle_before]
        if not old:
            continue
        for candidate in old:
            _pop(state, pending, candidate.event_id)
        if not pending:
            _pop(state, state.pending, location_id)
        latest = max(old, key=lambda c: (c.as_of, c.event_id))
        if _beats(latest, state.settled.get(location_id)):
            _put(state, state.settled, location_id, latest)
        _recount(state, location_id, result.redundant)
        result.summary_changed = True
    if forget_before > state.forgotten_before:
        _forget_applied(state, forget_before, result)
    if _forget_lines(state, forget_before, result.redundant):
        result.summary_changed = True
    return result


def _forget_applied(state: SkuState, forget_before: int, result: Pruned) -> None:
    forgotten = False
    for event_id, applied in list(state.applied.items()):
        if applied.occurred_at >= forget_before:
            continue
        _pop(state, state.applied, event_id)
        key = (applied.counter, applied.location_id)
        _put(state, state.carried, key, state.carried.get(key, 0) + applied.quantity)
        _leave(state, event_id, applied.delta_at, result.redundant)
        forgotten = True
    if forgotten:
        # Only then: the summary is rewritten with it, and nothing between the old
        # and the new time was there to forget (the worker refuses such events).
        _set_forgotten_before(state, forget_before)
        result.summary_changed = True


def _leave(state: SkuState, event_id: str, delta_at: str | None, redundant: list[str]) -> None:
    """A forgotten event's entry: deleted, or kept for a delta no cut contains yet."""
    if delta_at is not None and event_id in state.deltas.get(delta_at, {}):
        _put(state, state.lingering, event_id, delta_at)
    else:
        redundant.append(event_id)


def _forget_lines(state: SkuState, forget_before: int, redundant: list[str]) -> bool:
    """Forget the lines that are done; True when a location joined the carried ones."""
    located = False
    for reservation_id, line in list(state.reservations.items()):
        if line.last_event_at() >= forget_before:
            continue
        hold = line.hold
        expired = (
            hold is not None and hold.expires_at is not None and hold.expires_at < forget_before
        )
        if not (line.closed or expired):
            continue
        _withdraw(state, reservation_id, line)
        _pop(state, state.reservations, reservation_id)
        if hold is not None:
            if hold.location_id not in state.carried_locations:
                _put(state, state.carried_locations, hold.location_id, None)
                located = True
            # The create before the closer: should the worker stop between the two
            # deletions, what is left is a closed line, which counts nothing.
            redundant.append(hold.event_id)
        if line.closer is not None:
            _leave(state, line.closer.event_id, line.closer.delta_at, redundant)
    return located


def restore_carried(
    state: SkuState,
    forgotten_before: int,
    carried: dict[tuple[str, str], int],
    locations: Iterable[str],
) -> None:
    """Recovery: the carried sums of the SKU's latest summary record. The transfer
    legs and damaged returns older than ``forgotten_before`` are in them: any such
    event folded before is taken out again (its entry may come before the summary
    that carries it)."""
    for event_id, applied in list(state.applied.items()):
        if applied.occurred_at < forgotten_before:
            counts = state.transit if applied.counter == "transit" else state.damaged
            counts[applied.location_id] -= applied.quantity
            del state.applied[event_id]
            if applied.delta_at is not None and event_id in state.deltas.get(applied.delta_at, {}):
                state.lingering[event_id] = applied.delta_at
    for (counter, location_id), amount in carried.items():
        before = state.carried.get((counter, location_id), 0)
        counts = state.transit if counter == "transit" else state.damaged
        counts[location_id] = counts.get(location_id, 0) + amount - before
        state.carried[(counter, location_id)] = amount
    state.forgotten_before = max(state.forgotten_before, forgotten_before)
    for location_id in locations:
        state.carried_locations[location_id] = None
