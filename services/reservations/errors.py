"""How a reservation request can fail, as the HTTP and gRPC APIs map it to their
answers (``services.http.routes_reservations``, ``services.grpc.reservations``)."""

from __future__ import annotations

from typing import Any


class ReservationError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Conflict(ReservationError):
    """Another request body under the same reservation id."""


class InProgress(ReservationError):
    """A request for the reservation id is being placed right now."""


class NotFound(ReservationError):
    pass


class NotActive(ReservationError):
    """Released or expired: it cannot be extended."""


class Unavailable(ReservationError):
    """Redis or the broker cannot be reached; nothing is held."""


class InsufficientStock(ReservationError):
    def __init__(self, lines: list[dict[str, Any]]) -> None:
        super().__init__("not every line can be held; nothing is held")
        self.lines = lines
