"""Which locations of a SKU an event can change: the serving layer rewrites and
announces those alone (README "Serving layer"), so one sold unit costs the same at a
SKU stocked in 20 stores as in 1,000."""

from __future__ import annotations

from availability.events import (
    Event,
    ReservationCreated,
    ReservationFulfilled,
    ReservationReleased,
    TransferReceived,
    TransferShipped,
)
from availability.state import SkuState

_RESERVATION_EVENTS = (ReservationCreated, ReservationReleased, ReservationFulfilled)


def event_locations(state: SkuState, event: Event) -> set[str]:
    """The locations whose figures ``event`` can change, given the state before or
    after its fold (call it with both: a reservation line's hold sits at the location
    of its latest ``reservation.created``, which the event may move)."""
    if isinstance(event, TransferShipped | TransferReceived):
        return {event.from_location, event.to_location}
    found = {event.location_id}
    if isinstance(event, _RESERVATION_EVENTS):
        line = state.reservations.get(event.reservation_id)
        if line is not None and line.hold is not None:
            found.add(line.hold.location_id)
    return found
