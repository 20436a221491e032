"""Holds: the reservation API's short-lived lead over the fold (README "Reservations").

A *hold* is what ``POST /v1/reservations`` places for one reservation line before the
worker has folded the line's ``reservation.created``: units at one location of one
SKU, counted as reserved until ``deadline`` (ms since the epoch). The fold stays the
one source of truth: once it has the line, the hold is handed over (removed in the
same step that writes the folded figures), and a hold that is never handed over
stops counting at its deadline.

Everything here is pure arithmetic the API and the tests share; the atomic check
itself runs in Redis (``infra.reservation_store``), which applies the same formula:

    free(loc, ch) = on_hand - reserved - held(loc) - safety_stock - buffer(ch)

where ``reserved`` is the folded figure and ``held(loc)`` the sum of the live holds at
the location. A line of ``q`` units fits at a location when ``q <= free``.

Placement of a line that names no location (``placement_order``): the location with
the most free units for the channel, ties broken by location id; a line is never
split across locations.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from availability.ats import LocationAvailability, SkuAvailability

#: The reservation window the API accepts, in seconds (4 hours at most).
MIN_EXPIRES_IN_S = 1
MAX_EXPIRES_IN_S = 14_400
#: Lines in one reservation, at most (each is one hold and one event).
MAX_LINES = 100


@dataclass(frozen=True, slots=True)
class Hold:
    """Units held at one location of one SKU for a reservation line, until ``deadline``."""

    reservation_id: str
    location_id: str
    quantity: int
    deadline: int  # ms since the epoch

    def live(self, now: int) -> bool:
        return self.deadline > now

    def encode(self) -> bytes:
        """The hold's value in Redis: ``<location> <quantity> <deadline>`` (a location id
        has no spaces); the reservation id is the hash field."""
        return f"{self.location_id} {self.quantity} {self.deadline}".encode()

    @classmethod
    def decode(cls, reservation_id: str, value: bytes) -> Hold:
        location_id, quantity, deadline = value.decode().split(" ")
        return cls(reservation_id, location_id, int(quantity), int(deadline))


def held_by_location(holds: Iterable[Hold], now: int) -> dict[str, int]:
    """Units the live holds keep, per location."""
    held: dict[str, int] = {}
    for hold in holds:
        if hold.live(now):
            held[hold.location_id] = held.get(hold.location_id, 0) + hold.quantity
    return held


def free_units(location: LocationAvailability, channel: str, held: int) -> int:
    """Units a new hold may take at ``location`` for ``channel`` (may be negative)."""
    return (
        location.on_hand
        - location.reserved
        - held
        - location.safety_stock
        - location.buffer(channel)
    )


def with_holds(availability: SkuAvailability, holds: Iterable[Hold], now: int) -> SkuAvailability:
    """The figures as a read shows them: the live holds counted as reserved.

    A hold at a location the folded figures do not list (the location's record was
    pruned meanwhile) adds nothing: no hold can be placed where there is no stock.
    """
    return with_held(availability, held_by_location(holds, now))


def with_held(availability: SkuAvailability, held: Mapping[str, int]) -> SkuAvailability:
    """The figures with ``held`` units per location counted as reserved (a location
    the figures do not list adds nothing, as in ``with_holds``)."""
    if not held:
        return availability
    locations = tuple(
        replace(loc, reserved=loc.reserved + held.get(loc.location_id, 0))
        for loc in availability.locations
    )
    return SkuAvailability(availability.sku, locations, availability.next_expiry)


def placement_order(
    availability: SkuAvailability | None, channel: str, held: Mapping[str, int]
) -> list[str]:
    """Where to try a line that names no location: locations with free units for the
    channel, most free first, ties by location id. Locations with none are left out."""
    if availability is None:
        return []
    ranked = [
        (-free, loc.location_id)
        for loc in availability.locations
        if (free := free_units(loc, channel, held.get(loc.location_id, 0))) > 0
    ]
    return [location_id for _, location_id in sorted(ranked)]


def most_free(
    availability: SkuAvailability | None,
    channel: str,
    held: Mapping[str, int],
    location_id: str | None,
) -> int:
    """What a 409 reports as available for a line: the free units at its location, or
    at the best location when it names none (lines are not split), never below 0."""
    if availability is None:
        return 0
    best = 0
    for loc in availability.locations:
        if location_id is None or loc.location_id == location_id:
            best = max(best, free_units(loc, channel, held.get(loc.location_id, 0)))
    return best


# --- how long a hold counts -------------------------------------------------------------


def pending_deadline(now: int, expires_at: int, publish_window_ms: int) -> int:
    """The deadline of a hold just placed, whose event the broker has not acknowledged:
    the crash window. Should the API die before publishing, the hold is gone by then."""
    return min(expires_at, now + publish_window_ms)


def published_deadline(now: int, expires_at: int, handover_window_ms: int) -> int:
    """The deadline of a hold whose event the broker acknowledged: it counts until the
    worker has folded the event (and hands the hold over), for at most the handover
    window, and never past the reservation's own expiry."""
    return min(expires_at, now + handover_window_ms)


# --- the request and its fingerprint -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineRequest:
    sku: str
    quantity: int
    location_id: str | None = None


@dataclass(frozen=True, slots=True)
class ReservationRequest:
    reservation_id: str
    channel: str
    expires_in_s: int
    lines: tuple[LineRequest, ...]

    def fingerprint(self) -> str:
        """Equal for equal requests, whatever the order of their lines: what decides
        whether a repeated ``reservation_id`` is the same request or a conflict."""
        parts = [self.reservation_id, self.channel, str(self.expires_in_s)]
        for line in sorted(self.lines, key=lambda x: x.sku):
            parts.append(f"{line.sku}\t{line.quantity}\t{line.location_id or ''}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def duplicate_skus(lines: Sequence[LineRequest]) -> list[str]:
    """SKUs named by more than one line (a reservation line is reservation id + SKU)."""
    seen: set[str] = set()
    twice: list[str] = []
    for line in lines:
        if line.sku in seen and line.sku not in twice:
            twice.append(line.sku)
        seen.add(line.sku)
    return twice


def line_event_id(reservation_id: str, sku: str, kind: str, occurred_at: int) -> str:
    """The ``event_id`` of an event the API publishes for a line: the same inputs give
    the same id (a retried publish is applied once), and it fits the 128 characters
    whatever the lengths of the reservation id and SKU."""
    digest = hashlib.sha256(f"{reservation_id}\n{sku}\n{kind}\n{occurred_at}".encode())
    return f"rsv-{kind}-{digest.hexdigest()[:40]}"
