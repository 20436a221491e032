"""Per-SKU stock state and the fold of contract section 3.

The state keeps *facts*, not running totals, so that folding any set of events in
any order, with any duplicates, gives the same state:

- ERP balances are a max-register per location: the greatest ``(as_of, event_id)``
  wins whatever the order of arrival.
- On-hand deltas are kept per location by ``event_id`` (a redelivery overwrites
  itself) and only while they are newer than the location's baseline; a delta at
  or before the baseline is contained in the ERP figure, now or whenever that
  baseline arrives, so dropping it is the same in every order.
- Damaged returns and transfer legs add to counters that no baseline resets, so
  their ``event_id``s are remembered in ``applied``.
- A reservation line keeps its latest ``reservation.created`` (by
  ``(occurred_at, event_id)``) and a permanent ``closed`` flag set by release or
  fulfilment; whether it counts is decided at read time with ``now``.

Besides the facts, the state keeps running sums per location of its deltas
(``moved``) and of its reservation lines (``held``, ``expiring``,
``line_locations``), derived from them and updated with them, so that computing the
figures never walks every sale since the last ERP balance nor every line a SKU has
ever had: a SKU in a flash sale gathers thousands of both.

The fold functions mutate the state they are given and return whether anything
changed; they do no I/O and read no clock. Given a ``settled`` list, they also
name the earlier events that the change made redundant (their effect is now
contained in the state's other facts for good): the sales and sellable returns a
newer ERP balance contains, and a reservation line's superseded
``reservation.created``. The worker's journal deletes their entries
(``availability.journal``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from availability.display import preview
from availability.events import (
    ErpBalance,
    Event,
    PosReturn,
    PosSale,
    ReservationCreated,
    ReservationFulfilled,
    ReservationReleased,
    TransferReceived,
    TransferShipped,
)


@dataclass(frozen=True, slots=True)
class Baseline:
    as_of: int
    event_id: str
    on_hand: int


@dataclass(frozen=True, slots=True)
class ReservationHold:
    """What a ``reservation.created`` says about its line."""

    occurred_at: int
    event_id: str
    location_id: str
    quantity: int
    expires_at: int | None
    channel: str | None


@dataclass(slots=True)
class ReservationLine:
    hold: ReservationHold | None = None
    closed: bool = False

    def active(self, now: int) -> bool:
        hold = self.hold
        return (
            hold is not None
            and not self.closed
            and (hold.expires_at is None or hold.expires_at > now)
        )


# An on-hand delta: (occurred_at, signed quantity, standalone). Standalone: the
# delta is all that its event did (a sale, a sellable return), so once a baseline
# contains it the event is redundant; a transfer leg or a fulfilment did more.
Delta = tuple[int, int, bool]


@dataclass(slots=True)
class SkuState:
    sku: str
    baselines: dict[str, Baseline] = field(default_factory=dict)
    # location -> event_id -> delta, newer than the location's baseline
    deltas: dict[str, dict[str, Delta]] = field(default_factory=dict)
    damaged: dict[str, int] = field(default_factory=dict)
    # to_location -> shipped - received (reported clamped at 0)
    transit: dict[str, int] = field(default_factory=dict)
    applied: set[str] = field(default_factory=set)
    reservations: dict[str, ReservationLine] = field(default_factory=dict)
    # Derived from ``deltas``: location -> the sum of its deltas' quantities
    moved: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    # Derived from ``reservations`` (kept in step by _withdraw and _deposit):
    # location -> units of its open lines that never expire
    held: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    # reservation_id -> hold, for the open lines that expire
    expiring: dict[str, ReservationHold] = field(default_factory=dict, compare=False, repr=False)
    # location -> how many lines (open or closed) hold there
    line_locations: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def locations(self) -> list[str]:
        """Every location the SKU has state at, sorted."""
        found = set(self.baselines)
        found.update(self.deltas)
        found.update(self.damaged)
        found.update(self.transit)
        found.update(self.line_locations)
        return sorted(found)

    def on_hand(self, location_id: str) -> int:
        baseline = self.baselines.get(location_id)
        return (0 if baseline is None else baseline.on_hand) + self.moved.get(location_id, 0)

    def reserved(self, now: int) -> tuple[dict[str, int], int | None]:
        """Units of the active lines per location at ``now``, and when the next of
        them expires (None: none does)."""
        reserved = dict(self.held)
        next_expiry: int | None = None
        for hold in self.expiring.values():
            expires_at = hold.expires_at
            assert expires_at is not None
            if expires_at <= now:
                continue
            if next_expiry is None or expires_at < next_expiry:
                next_expiry = expires_at
            reserved[hold.location_id] = reserved.get(hold.location_id, 0) + hold.quantity
        return reserved, next_expiry


# --- the fold ---------------------------------------------------------------


def _add_delta(
    state: SkuState, location_id: str, event_id: str, occurred_at: int, qty: int, standalone: bool
) -> bool:
    baseline = state.baselines.get(location_id)
    if baseline is not None and occurred_at <= baseline.as_of:
        return False
    at_location = state.deltas.setdefault(location_id, {})
    if event_id in at_location:
        return False
    at_location[event_id] = (occurred_at, qty, standalone)
    state.moved[location_id] = state.moved.get(location_id, 0) + qty
    return True


def fold_erp_balance(state: SkuState, event: ErpBalance, settled: list[str]) -> bool:
    current = state.baselines.get(event.location_id)
    if current is not None and (event.as_of, event.event_id) <= (current.as_of, current.event_id):
        return False
    state.baselines[event.location_id] = Baseline(event.as_of, event.event_id, event.on_hand)
    at_location = state.deltas.get(event.location_id)
    if at_location is not None:
        kept = {}
        moved = 0
        for event_id, delta in at_location.items():
            if delta[0] > event.as_of:
                kept[event_id] = delta
                moved += delta[1]
            elif delta[2]:
                settled.append(event_id)
        if kept:
            state.deltas[event.location_id] = kept
            state.moved[event.location_id] = moved
        else:
            del state.deltas[event.location_id]
            del state.moved[event.location_id]
    return True


def fold_pos_sale(state: SkuState, event: PosSale, settled: list[str]) -> bool:
    return _add_delta(
        state, event.location_id, event.event_id, event.occurred_at, -event.quantity, True
    )


def fold_pos_return(state: SkuState, event: PosReturn, settled: list[str]) -> bool:
    if event.disposition == "sellable":
        return _add_delta(
            state, event.location_id, event.event_id, event.occurred_at, event.quantity, True
        )
    if event.event_id in state.applied:
        return False
    state.applied.add(event.event_id)
    state.damaged[event.location_id] = state.damaged.get(event.location_id, 0) + event.quantity
    return True


def fold_transfer_shipped(state: SkuState, event: TransferShipped, settled: list[str]) -> bool:
    if event.event_id in state.applied:
        return False
    state.applied.add(event.event_id)
    state.transit[event.to_location] = state.transit.get(event.to_location, 0) + event.quantity
    _add_delta(
        state, event.from_location, event.event_id, event.occurred_at, -event.quantity, False
    )
    return True


def fold_transfer_received(state: SkuState, event: TransferReceived, settled: list[str]) -> bool:
    if event.event_id in state.applied:
        return False
    state.applied.add(event.event_id)
    state.transit[event.to_location] = state.transit.get(event.to_location, 0) - event.quantity
    _add_delta(state, event.to_location, event.event_id, event.occurred_at, event.quantity, False)
    return True


def _count(counts: dict[str, int], key: str, by: int) -> None:
    total = counts.get(key, 0) + by
    if total:
        counts[key] = total
    else:
        del counts[key]


def _withdraw(state: SkuState, reservation_id: str, line: ReservationLine) -> None:
    """Take a line out of the derived sums (before it changes)."""
    hold = line.hold
    if hold is None:
        return
    _count(state.line_locations, hold.location_id, -1)
    if line.closed:
        return
    if hold.expires_at is None:
        _count(state.held, hold.location_id, -hold.quantity)
    else:
        del state.expiring[reservation_id]


def _deposit(state: SkuState, reservation_id: str, line: ReservationLine) -> None:
    """Put a line into the derived sums (after it changed)."""
    hold = line.hold
    if hold is None:
        return
    _count(state.line_locations, hold.location_id, 1)
    if line.closed:
        return
    if hold.expires_at is None:
        _count(state.held, hold.location_id, hold.quantity)
    else:
        state.expiring[reservation_id] = hold


def fold_reservation_created(
    state: SkuState, event: ReservationCreated, settled: list[str]
) -> bool:
    line = state.reservations.setdefault(event.reservation_id, ReservationLine())
    hold = line.hold
    if hold is not None:
        if (event.occurred_at, event.event_id) <= (hold.occurred_at, hold.event_id):
            return False
        settled.append(hold.event_id)
    _withdraw(state, event.reservation_id, line)
    line.hold = ReservationHold(
        event.occurred_at,
        event.event_id,
        event.location_id,
        event.quantity,
        event.expires_at,
        event.channel,
    )
    _deposit(state, event.reservation_id, line)
    return True


def _close_reservation(state: SkuState, reservation_id: str) -> bool:
    line = state.reservations.setdefault(reservation_id, ReservationLine())
    if line.closed:
        return False
    _withdraw(state, reservation_id, line)
    line.closed = True
    _deposit(state, reservation_id, line)
    return True


def fold_reservation_released(
    state: SkuState, event: ReservationReleased, settled: list[str]
) -> bool:
    return _close_reservation(state, event.reservation_id)


def fold_reservation_fulfilled(
    state: SkuState, event: ReservationFulfilled, settled: list[str]
) -> bool:
    closed = _close_reservation(state, event.reservation_id)
    shipped = _add_delta(
        state, event.location_id, event.event_id, event.occurred_at, -event.quantity, False
    )
    return closed or shipped


_FOLDS: dict[type, Callable[[SkuState, Any, list[str]], bool]] = {
    ErpBalance: fold_erp_balance,
    PosSale: fold_pos_sale,
    PosReturn: fold_pos_return,
    TransferShipped: fold_transfer_shipped,
    TransferReceived: fold_transfer_received,
    ReservationCreated: fold_reservation_created,
    ReservationReleased: fold_reservation_released,
    ReservationFulfilled: fold_reservation_fulfilled,
}


def fold(state: SkuState, event: Event, settled: list[str] | None = None) -> bool:
    """Apply one event to its SKU's state; True when the state changed.

    ``settled``, when given, receives the ids of earlier events this one made
    redundant (see the module docstring).
    """
    if event.sku != state.sku:
        raise ValueError(
            f"event for sku {preview(event.sku)} folded into state of {preview(state.sku)}"
        )
    return _FOLDS[type(event)](state, event, [] if settled is None else settled)


def fold_all(sku: str, events: list[Event] | tuple[Event, ...]) -> SkuState:
    state = SkuState(sku)
    for event in events:
        fold(state, event)
    return state
