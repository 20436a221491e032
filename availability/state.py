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

The fold functions mutate the state they are given and return whether anything
changed; they do no I/O and read no clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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


@dataclass(slots=True)
class SkuState:
    sku: str
    baselines: dict[str, Baseline] = field(default_factory=dict)
    # location -> event_id -> (occurred_at, signed quantity), newer than the baseline
    deltas: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)
    damaged: dict[str, int] = field(default_factory=dict)
    # to_location -> shipped - received (reported clamped at 0)
    transit: dict[str, int] = field(default_factory=dict)
    applied: set[str] = field(default_factory=set)
    reservations: dict[str, ReservationLine] = field(default_factory=dict)

    def locations(self) -> list[str]:
        """Every location the SKU has state at, sorted."""
        found = set(self.baselines)
        found.update(self.deltas)
        found.update(self.damaged)
        found.update(self.transit)
        for line in self.reservations.values():
            if line.hold is not None:
                found.add(line.hold.location_id)
        return sorted(found)

    def on_hand(self, location_id: str) -> int:
        baseline = self.baselines.get(location_id)
        total = baseline.on_hand if baseline is not None else 0
        for _, quantity in self.deltas.get(location_id, {}).values():
            total += quantity
        return total


# --- the fold ---------------------------------------------------------------


def _add_delta(
    state: SkuState, location_id: str, event_id: str, occurred_at: int, qty: int
) -> bool:
    baseline = state.baselines.get(location_id)
    if baseline is not None and occurred_at <= baseline.as_of:
        return False
    at_location = state.deltas.setdefault(location_id, {})
    if event_id in at_location:
        return False
    at_location[event_id] = (occurred_at, qty)
    return True


def fold_erp_balance(state: SkuState, event: ErpBalance) -> bool:
    current = state.baselines.get(event.location_id)
    if current is not None and (event.as_of, event.event_id) <= (current.as_of, current.event_id):
        return False
    state.baselines[event.location_id] = Baseline(event.as_of, event.event_id, event.on_hand)
    at_location = state.deltas.get(event.location_id)
    if at_location is not None:
        kept = {e: d for e, d in at_location.items() if d[0] > event.as_of}
        if kept:
            state.deltas[event.location_id] = kept
        else:
            del state.deltas[event.location_id]
    return True


def fold_pos_sale(state: SkuState, event: PosSale) -> bool:
    return _add_delta(state, event.location_id, event.event_id, event.occurred_at, -event.quantity)


def fold_pos_return(state: SkuState, event: PosReturn) -> bool:
    if event.disposition == "sellable":
        return _add_delta(
            state, event.location_id, event.event_id, event.occurred_at, event.quantity
        )
    if event.event_id in state.applied:
        return False
    state.applied.add(event.event_id)
    state.damaged[event.location_id] = state.damaged.get(event.location_id, 0) + event.quantity
    return True


def fold_transfer_shipped(state: SkuState, event: TransferShipped) -> bool:
    if event.event_id in state.applied:
        return False
    state.applied.add(event.event_id)
    state.transit[event.to_location] = state.transit.get(event.to_location, 0) + event.quantity
    _add_delta(state, event.from_location, event.event_id, event.occurred_at, -event.quantity)
    return True


def fold_transfer_received(state: SkuState, event: TransferReceived) -> bool:
    if event.event_id in state.applied:
        return False
    state.applied.add(event.event_id)
    state.transit[event.to_location] = state.transit.get(event.to_location, 0) - event.quantity
    _add_delta(state, event.to_location, event.event_id, event.occurred_at, event.quantity)
    return True


def fold_reservation_created(state: SkuState, event: ReservationCreated) -> bool:
    line = state.reservations.setdefault(event.reservation_id, ReservationLine())
    hold = line.hold
    if hold is not None and (event.occurred_at, event.event_id) <= (
        hold.occurred_at,
        hold.event_id,
    ):
        return False
    line.hold = ReservationHold(
        event.occurred_at,
        event.event_id,
        event.location_id,
        event.quantity,
        event.expires_at,
        event.channel,
    )
    return True


def _close_reservation(state: SkuState, reservation_id: str) -> bool:
    line = state.reservations.setdefault(reservation_id, ReservationLine())
    if line.closed:
        return False
    line.closed = True
    return True


def fold_reservation_released(state: SkuState, event: ReservationReleased) -> bool:
    return _close_reservation(state, event.reservation_id)


def fold_reservation_fulfilled(state: SkuState, event: ReservationFulfilled) -> bool:
    closed = _close_reservation(state, event.reservation_id)
    shipped = _add_delta(
        state, event.location_id, event.event_id, event.occurred_at, -event.quantity
    )
    return closed or shipped


_FOLDS: dict[type, Callable[[SkuState, Any], bool]] = {
    ErpBalance: fold_erp_balance,
    PosSale: fold_pos_sale,
    PosReturn: fold_pos_return,
    TransferShipped: fold_transfer_shipped,
    TransferReceived: fold_transfer_received,
    ReservationCreated: fold_reservation_created,
    ReservationReleased: fold_reservation_released,
    ReservationFulfilled: fold_reservation_fulfilled,
}


def fold(state: SkuState, event: Event) -> bool:
    """Apply one event to its SKU's state; True when the state changed."""
    if event.sku != state.sku:
        raise ValueError(f"event for sku {event.sku!r} folded into state of {state.sku!r}")
    return _FOLDS[type(event)](state, event)


def fold_all(sku: str, events: list[Event] | tuple[Event, ...]) -> SkuState:
    state = SkuState(sku)
    for event in events:
        fold(state, event)
    return state


# --- plain-data form, for the changelog -------------------------------------


def state_to_data(state: SkuState) -> dict[str, Any]:
    """A JSON-ready form; encode it with sorted keys (``orjson.OPT_SORT_KEYS``) so that
    equal states encode equally. Runs for every changed SKU: the deltas, damaged and
    transit maps go in as they are (tuples encode as arrays), not copied."""
    return {
        "sku": state.sku,
        "b": {loc: [b.as_of, b.event_id, b.on_hand] for loc, b in state.baselines.items()},
        "d": state.deltas,
        "dm": state.damaged,
        "t": state.transit,
        "a": sorted(state.applied),
        "r": {
            rid: [
                None
                if line.hold is None
                else [
                    line.hold.occurred_at,
                    line.hold.event_id,
                    line.hold.location_id,
                    line.hold.quantity,
                    line.hold.expires_at,
                    line.hold.channel,
                ],
                line.closed,
            ]
            for rid, line in state.reservations.items()
        },
    }


def state_from_data(data: dict[str, Any]) -> SkuState:
    return SkuState(
        sku=data["sku"],
        baselines={loc: Baseline(b[0], b[1], b[2]) for loc, b in data["b"].items()},
        deltas={
            loc: {eid: (v[0], v[1]) for eid, v in entries.items()}
            for loc, entries in data["d"].items()
        },
        damaged=dict(data["dm"]),
        transit=dict(data["t"]),
        applied=set(data["a"]),
        reservations={
            rid: ReservationLine(None if hold is None else ReservationHold(*hold), bool(closed))
            for rid, (hold, closed) in data["r"].items()
        },
    )
