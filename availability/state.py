"""Per-SKU stock state and the fold of contract section 3.

The state keeps *facts*, not running totals, so that folding any set of events in
any order, with any duplicates, gives the same state:

- **Baselines.** Every ERP balance and operator reset (``erp.baseline_reset``) at a
  location is a *candidate*; a reset also *voids* the candidates it names, for good.
  The baseline is the greatest ``(as_of, event_id)`` among the candidates that are
  not voided, with one rule for old ones: of the candidates dated at or before
  ``settle_before`` (a time the caller passes, ``now - AVAILABILITY_MAX_FUTURE_SKEW``
  in the worker) only the latest, voided or not, is kept (``settled``), and it
  is the *cut*: the on-hand deltas at or before it are forgotten (contained in an
  ERP figure). Newer candidates are all kept (``pending``) with every delta after
  the cut, so that a reset that voids a baseline dated in the future finds
  everything the baseline had hidden. Why that is enough: a reset is dated when it
  is issued and refused when it is folded more than the skew later
  (``events.check_time``), so it is never dated before a cut, and so whatever it
  could need is dated after every cut.
- **On hand** = baseline + the deltas after ``max(cut, baseline.as_of)``. Deltas are
  kept per location by ``event_id`` (a redelivery overwrites itself).
- Damaged returns and transfer legs add to counters that no baseline resets, so
  their ``event_id``s are remembered in ``applied``.
- A reservation line keeps its latest ``reservation.created`` (by ``(occurred_at,
  event_id)``) and its latest closing event (release or fulfilment; closed for good);
  whether it counts is decided at read time with ``now``.

**Bounded state** (``availability.horizon.prune``, run by the worker with its clock):
closed lines and expired ones whose every event is older than ``forget_before`` (``now -
AVAILABILITY_STATE_HORIZON``) leave the state, and so do the remembered ids of
transfer legs and damaged returns older than it (their counts stay: what they
added is *carried*, and ``forgotten_before`` says that every such event older than it
is in the carried sums). Why a later duplicate is still harmless: a redelivered
event carries its original ``occurred_at`` (README, "Choices"), so it is older than
the horizon too, and the worker refuses such events before the fold (``too_old``,
``events.check_time``); the fold itself ignores the id-part of a transfer or damaged
return older than ``forgotten_before``. A forgotten line's location stays listed.
The cost: a *new* event for a forgotten reservation line (a reused
``reservation_id``) starts a new line.

Besides the facts, the state keeps running sums per location of its deltas
(``moved``) and of its reservation lines (``held``, ``expiring``, ``line_locations``),
so that computing the figures never walks every sale since the last ERP balance nor
every line a SKU has ever had.

**Atomicity.** Every change goes through ``_put``/``_pop``, which note the old value
while an undo log is open (``begin``): ``rollback`` puts the state back exactly as
it was at a mark, so an event whose fold fails half-way (a bug, not bad input:
input is validated before) is dead-lettered by the worker without leaving its SKU
half-changed (``journal.journal_batch``).

The fold functions return whether anything changed; they do no I/O and read no
clock. Given a ``settled`` list, they also name the earlier events whose journal
entries the change made redundant (``availability.journal`` deletes them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final

from availability.display import preview
from availability.events import (
    ErpBalance,
    ErpBaselineReset,
    Event,
    PosReturn,
    PosSale,
    ReservationCreated,
    ReservationFulfilled,
    ReservationReleased,
    TransferReceived,
    TransferShipped,
)

#: ``settle_before`` that settles every candidate at once (the fold before resets
#: existed); ``forget_before`` that forgets nothing.
ALWAYS: Final = 2**63 - 1
NEVER: Final = -(2**63)

_MISSING: Final[Any] = object()


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


@dataclass(frozen=True, slots=True)
class Closer:
    """The latest release or fulfilment of a line (``delta_at``: a fulfilment's
    location, where its on-hand delta is)."""

    occurred_at: int
    event_id: str
    delta_at: str | None


@dataclass(frozen=True, slots=True)
class ReservationLine:
    hold: ReservationHold | None = None
    closer: Closer | None = None

    @property
    def closed(self) -> bool:
        return self.closer is not None

    def active(self, now: int) -> bool:
        hold = self.hold
        return (
            hold is not None
            and self.closer is None
            and (hold.expires_at is None or hold.expires_at > now)
        )

    def last_event_at(self) -> int:
        times = [x.occurred_at for x in (self.hold, self.closer) if x is not None]
        return max(times)


@dataclass(frozen=True, slots=True)
class Applied:
    """A transfer leg or damaged return: when, and what it added to which counter
    (``counter`` "transit" or "damaged"); ``delta_at``: where its on-hand delta is."""

    occurred_at: int
    counter: str
    location_id: str
    quantity: int
    delta_at: str | None


# An on-hand delta: (occurred_at, signed quantity, standalone). Standalone: the
# delta is all that its event did (a sale, a sellable return), so once a cut
# contains it the event is redundant; a transfer leg or a fulfilment did more.
Delta = tuple[int, int, bool]


@dataclass(slots=True)
class SkuState:
    sku: str
    # The baseline per location (derived from settled, pending and voided).
    baselines: dict[str, Baseline] = field(default_factory=dict)
    # location -> the latest candidate dated at or before settle_before (the cut)
    settled: dict[str, Baseline] = field(default_factory=dict)
    # location -> event_id -> candidate dated after settle_before
    pending: dict[str, dict[str, Baseline]] = field(default_factory=dict)
    # location -> candidates voided by resets
    voided: dict[str, frozenset[str]] = field(default_factory=dict)
    # location -> event_id -> delta, after the location's cut
    deltas: dict[str, dict[str, Delta]] = field(default_factory=dict)
    damaged: dict[str, int] = field(default_factory=dict)
    # to_location -> shipped - received (reported clamped at 0)
    transit: dict[str, int] = field(default_factory=dict)
    applied: dict[str, Applied] = field(default_factory=dict)
    reservations: dict[str, ReservationLine] = field(default_factory=dict)
    # What forgotten transfer legs and damaged returns added (see prune), and the
    # time before which every such event is in it.
    carried: dict[tuple[str, str], int] = field(default_factory=dict)
    forgotten_before: int = NEVER
    # Locations of forgotten reservation lines (they stay listed).
    carried_locations: dict[str, None] = field(default_factory=dict)
    # Events whose journal entry is kept only for their on-hand delta: deleted once
    # a cut contains it. event_id -> the delta's location.
    lingering: dict[str, str] = field(default_factory=dict)
    # Derived from ``deltas``: location -> the sum of its counted deltas' quantities
    moved: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    # Derived from ``reservations`` (kept in step by _withdraw and _deposit):
    # location -> units of its open lines that never expire
    held: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    # reservation_id -> hold, for the open lines that expire
    expiring: dict[str, ReservationHold] = field(default_factory=dict, compare=False, repr=False)
    # location -> how many lines (open or closed) hold there
    line_locations: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    # The undo log while one is open: (mapping, key, old value or _MISSING).
    undo: list[tuple[MutableMapping[Any, Any], Any, Any]] | None = field(
        default=None, compare=False, repr=False
    )

    def locations(self) -> list[str]:
        """Every location the SKU has state at, sorted."""
        found = set(self.settled)
        found.update(self.pending)
        found.update(self.deltas)
        found.update(self.damaged)
        found.update(self.transit)
        found.update(self.line_locations)
        found.update(self.carried_locations)
        return sorted(found)

    def on_hand(self, location_id: str) -> int:
        baseline = self.baselines.get(location_id)
        return (0 if baseline is None else baseline.on_hand) + self.moved.get(location_id, 0)

    def cut(self, location_id: str) -> int:
        settled = self.settled.get(location_id)
        return NEVER if settled is None else settled.as_of

    def floor(self, location_id: str) -> int:
        """Deltas after this count (those at or before it are in the baseline)."""
        baseline = self.baselines.get(location_id)
        cut = self.cut(location_id)
        return cut if baseline is None or baseline.as_of < cut else baseline.as_of

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

    # --- the undo log ---

    def begin(self) -> list[tuple[MutableMapping[Any, Any], Any, Any]]:
        """Open the undo log (``rollback`` restores the state to a mark in it)."""
        self.undo = []
        return self.undo

    def rollback(self, mark: int) -> None:
        undo = self.undo
        assert undo is not None, "no undo log is open"
        while len(undo) > mark:
            mapping, key, old = undo.pop()
            if old is _MISSING:
                mapping.pop(key, None)
            else:
                mapping[key] = old

    def end(self) -> None:
        self.undo = None


def _put(state: SkuState, mapping: MutableMapping[Any, Any], key: Any, value: Any) -> None:
    undo = state.undo
    if undo is not None:
        undo.append((mapping, key, mapping.get(key, _MISSING)))
    mapping[key] = value


def _pop(state: SkuState, mapping: MutableMapping[Any, Any], key: Any) -> None:
    if key not in mapping:
        return
    undo = state.undo
    if undo is not None:
        undo.append((mapping, key, mapping[key]))
    del mapping[key]


def _count(state: SkuState, counts: dict[str, int], key: str, by: int) -> None:
    total = counts.get(key, 0) + by
    if total:
        _put(state, counts, key, total)
    else:
        _pop(state, counts, key)


# --- baselines ----------------------------------------------------------------


def _beats(a: Baseline, b: Baseline | None) -> bool:
    return b is None or (a.as_of, a.event_id) > (b.as_of, b.event_id)


def _winner(state: SkuState, location_id: str) -> Baseline | None:
    voided = state.voided.get(location_id, frozenset())
    best = state.settled.get(location_id)
    if best is not None and best.event_id in voided:
        best = None
    for candidate in state.pending.get(location_id, {}).values():
        if candidate.event_id not in voided and _beats(candidate, best):
            best = candidate
    return best


def _recount(state: SkuState, location_id: str, settled: list[str]) -> None:
    """After the location's baseline or cut changed: its baseline, the deltas the
    cut contains forgotten (their redundant events named in ``settled``), and the
    sum of the deltas that count."""
    winner = _winner(state, location_id)
    if winner is None:
        _pop(state, state.baselines, location_id)
    elif state.baselines.get(location_id) != winner:
        _put(state, state.baselines, location_id, winner)
    at_location = state.deltas.get(location_id)
    if at_location is None:
        return
    cut = state.cut(location_id)
    floor = state.floor(location_id)
    kept: dict[str, Delta] = {}
    moved = 0
    lingering = state.lingering
    for event_id, delta in at_location.items():
        if delta[0] > cut:
            kept[event_id] = delta
            if delta[0] > floor:
                moved += delta[1]
        elif delta[2]:
            settled.append(event_id)
        elif event_id in lingering:
            settled.append(event_id)
            _pop(state, lingering, event_id)
    if not kept:
        _pop(state, state.deltas, location_id)
        _pop(state, state.moved, location_id)
        return
    if len(kept) != len(at_location):
        _put(state, state.deltas, location_id, kept)
    if moved:
        _put(state, state.moved, location_id, moved)
    else:
        _pop(state, state.moved, location_id)


def _add_candidate(
    state: SkuState, location_id: str, candidate: Baseline, settle_before: int, settled: list[str]
) -> bool:
    if candidate.as_of <= settle_before:
        current = state.settled.get(location_id)
        if not _beats(candidate, current):
            return False
        _put(state, state.settled, location_id, candidate)
        _recount(state, location_id, settled)
        return True
    pending = state.pending.get(location_id)
    if pending is None:
        pending = {}
        _put(state, state.pending, location_id, pending)
    elif candidate.event_id in pending:
        return False
    _put(state, pending, candidate.event_id, candidate)
    if candidate.event_id not in state.voided.get(location_id, ()) and _beats(
        candidate, state.baselines.get(location_id)
    ):
        _recount(state, location_id, settled)
    return True


def fold_erp_balance(
    state: SkuState, event: ErpBalance, settled: list[str], settle_before: int
) -> bool:
    candidate = Baseline(event.as_of, event.event_id, event.on_hand)
    return _add_candidate(state, event.location_id, candidate, settle_before, settled)


def fold_baseline_reset(
    state: SkuState, event: ErpBaselineReset, settled: list[str], settle_before: int
) -> bool:
    location_id = event.location_id
    voided = state.voided.get(location_id, frozenset())
    more = voided.union(event.voids)
    changed = False
    if len(more) != len(voided):
        _put(state, state.voided, location_id, more)
        changed = True
    candidate = Baseline(event.as_of, event.event_id, event.on_hand)
    if _add_candidate(state, location_id, candidate, settle_before, settled):
        changed = True
    if changed:
        _recount(state, location_id, settled)
    return changed


# --- deltas and counters ---------------------------------------------------------


def _add_delta(
    state: SkuState, location_id: str, event_id: str, occurred_at: int, qty: int, standalone: bool
) -> bool:
    if occurred_at <= state.cut(location_id):
        return False
    at_location = state.deltas.get(location_id)
    if at_location is None:
        at_location = {}
        _put(state, state.deltas, location_id, at_location)
    elif event_id in at_location:
        return False
    _put(state, at_location, event_id, (occurred_at, qty, standalone))
    if occurred_at > state.floor(location_id):
        _count(state, state.moved, location_id, qty)
    return True


def fold_pos_sale(state: SkuState, event: PosSale, settled: list[str], settle_before: int) -> bool:
    return _add_delta(
        state, event.location_id, event.event_id, event.occurred_at, -event.quantity, True
    )


def _apply(state: SkuState, event_id: str, applied: Applied) -> None:
    _put(state, state.applied, event_id, applied)
    counts = state.transit if applied.counter == "transit" else state.damaged
    _put(state, counts, applied.location_id, counts.get(applied.location_id, 0) + applied.quantity)


def _leg(state: SkuState, event_id: str, applied: Applied, delta: tuple[str, int, int]) -> bool:
    """A transfer leg: its transit part once (unless forgotten), its delta."""
    location_id, occurred_at, qty = delta
    if occurred_at < state.forgotten_before:
        # Its transit part is in the carried sums (or the event is older than the
        # horizon and refused before the fold). Only a kept delta needs its entry.
        added = _add_delta(state, location_id, event_id, occurred_at, qty, False)
        if added:
            _put(state, state.lingering, event_id, location_id)
        return added
    if event_id in state.applied:
        return False
    _apply(state, event_id, applied)
    _add_delta(state, location_id, event_id, occurred_at, qty, False)
    return True


def fold_pos_return(
    state: SkuState, event: PosReturn, settled: list[str], settle_before: int
) -> bool:
    if event.disposition == "sellable":
        return _add_delta(
            state, event.location_id, event.event_id, event.occurred_at, event.quantity, True
        )
    if event.event_id in state.applied or event.occurred_at < state.forgotten_before:
        return False
    _apply(
        state,
        event.event_id,
        Applied(event.occurred_at, "damaged", event.location_id, event.quantity, None),
    )
    return True


def fold_transfer_shipped(
    state: SkuState, event: TransferShipped, settled: list[str], settle_before: int
) -> bool:
    applied = Applied(
        event.occurred_at, "transit", event.to_location, event.quantity, event.from_location
    )
    delta = (event.from_location, event.occurred_at, -event.quantity)
    return _leg(state, event.event_id, applied, delta)


def fold_transfer_received(
    state: SkuState, event: TransferReceived, settled: list[str], settle_before: int
) -> bool:
    applied = Applied(
        event.occurred_at, "transit", event.to_location, -event.quantity, event.to_location
    )
    delta = (event.to_location, event.occurred_at, event.quantity)
    return _leg(state, event.event_id, applied, delta)


# --- reservation lines -------------------------------------------------------------


def _withdraw(state: SkuState, reservation_id: str, line: ReservationLine) -> None:
    """Take a line out of the derived sums (before it changes)."""
    hold = line.hold
    if hold is None:
        return
    _count(state, state.line_locations, hold.location_id, -1)
    if line.closed:
        return
    if hold.expires_at is None:
        _count(state, state.held, hold.location_id, -hold.quantity)
    else:
        _pop(state, state.expiring, reservation_id)


def _deposit(state: SkuState, reservation_id: str, line: ReservationLine) -> None:
    """Put a line into the derived sums (after it changed)."""
    hold = line.hold
    if hold is None:
        return
    _count(state, state.line_locations, hold.location_id, 1)
    if line.closed:
        return
    if hold.expires_at is None:
        _count(state, state.held, hold.location_id, hold.quantity)
    else:
        _put(state, state.expiring, reservation_id, hold)


def _replace_line(
    state: SkuState, reservation_id: str, old: ReservationLine | None, new: ReservationLine
) -> None:
    if old is not None:
        _withdraw(state, reservation_id, old)
    _put(state, state.reservations, reservation_id, new)
    _deposit(state, reservation_id, new)


def fold_reservation_created(
    state: SkuState, event: ReservationCreated, settled: list[str], settle_before: int
) -> bool:
    line = state.reservations.get(event.reservation_id)
    hold = None if line is None else line.hold
    if hold is not None:
        if (event.occurred_at, event.event_id) <= (hold.occurred_at, hold.event_id):
            return False
        settled.append(hold.event_id)
    new_hold = ReservationHold(
        event.occurred_at,
        event.event_id,
        event.location_id,
        event.quantity,
        event.expires_at,
        event.channel,
    )
    closer = None if line is None else line.closer
    _replace_line(state, event.reservation_id, line, ReservationLine(new_hold, closer))
    return True


def _close_reservation(state: SkuState, reservation_id: str, closer: Closer) -> bool:
    """Note ``closer``; True when it is the line's latest. The closer it replaces is
    redundant: a release at once, a fulfilment once its delta is gone too."""
    line = state.reservations.get(reservation_id)
    previous = None if line is None else line.closer
    if previous is not None and (closer.occurred_at, closer.event_id) <= (
        previous.occurred_at,
        previous.event_id,
    ):
        return False
    hold = None if line is None else line.hold
    _replace_line(state, reservation_id, line, ReservationLine(hold, closer))
    return True


def _retire_closer(state: SkuState, closer: Closer | None, settled: list[str]) -> None:
    """A closer that no longer closes its line: its entry goes, unless it still holds
    an on-hand delta (a fulfilment), then once a cut contains that."""
    if closer is None:
        return
    if closer.delta_at is not None and closer.event_id in state.deltas.get(closer.delta_at, {}):
        _put(state, state.lingering, closer.event_id, closer.delta_at)
    else:
        settled.append(closer.event_id)


def fold_reservation_released(
    state: SkuState, event: ReservationReleased, settled: list[str], settle_before: int
) -> bool:
    line = state.reservations.get(event.reservation_id)
    previous = None if line is None else line.closer
    closer = Closer(event.occurred_at, event.event_id, None)
    if not _close_reservation(state, event.reservation_id, closer):
        return False
    _retire_closer(state, previous, settled)
    return True


def fold_reservation_fulfilled(
    state: SkuState, event: ReservationFulfilled, settled: list[str], settle_before: int
) -> bool:
    line = state.reservations.get(event.reservation_id)
    previous = None if line is None else line.closer
    closer = Closer(event.occurred_at, event.event_id, event.location_id)
    closes = _close_reservation(state, event.reservation_id, closer)
    shipped = _add_delta(
        state, event.location_id, event.event_id, event.occurred_at, -event.quantity, False
    )
    if closes:
        _retire_closer(state, previous, settled)
    elif shipped:
        # Not the line's closer: the entry is kept for its delta only.
        _put(state, state.lingering, event.event_id, event.location_id)
    return closes or shipped


_FOLDS: dict[type, Callable[[SkuState, Any, list[str], int], bool]] = {
    ErpBalance: fold_erp_balance,
    ErpBaselineReset: fold_baseline_reset,
    PosSale: fold_pos_sale,
    PosReturn: fold_pos_return,
    TransferShipped: fold_transfer_shipped,
    TransferReceived: fold_transfer_received,
    ReservationCreated: fold_reservation_created,
    ReservationReleased: fold_reservation_released,
    ReservationFulfilled: fold_reservation_fulfilled,
}


def fold(
    state: SkuState,
    event: Event,
    settled: list[str] | None = None,
    *,
    settle_before: int = ALWAYS,
) -> bool:
    """Apply one event to its SKU's state; True when the state changed.

    ``settled``, when given, receives the ids of earlier events this one made
    redundant (see the module docstring). ``settle_before``: see the module docstring
    (the default settles every candidate at once, as if every baseline were old).
    """
    if event.sku != state.sku:
        raise ValueError(
            f"event for sku {preview(event.sku)} folded into state of {preview(state.sku)}"
        )
    return _FOLDS[type(event)](state, event, [] if settled is None else settled, settle_before)


def fold_all(sku: str, events: Iterable[Event], *, settle_before: int = ALWAYS) -> SkuState:
    state = SkuState(sku)
    for event in events:
        fold(state, event, settle_before=settle_before)
    return state
