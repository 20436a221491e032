"""Checks of a reservation request's values, shared by the HTTP and gRPC APIs so that
both accept the same requests and say what a field must be in the same words.

Each check raises ``InvalidReservation`` whose message names the field; the APIs turn
it into their own invalid-argument answer (HTTP 400, gRPC INVALID_ARGUMENT). What is
particular to a transport (JSON types and unknown fields, proto3's empty defaults)
stays with it.
"""

from __future__ import annotations

from collections.abc import Sequence

from availability.display import preview
from availability.holds import (
    MAX_EXPIRES_IN_S,
    MAX_LINES,
    MIN_EXPIRES_IN_S,
    LineRequest,
    ReservationRequest,
    duplicate_skus,
)
from availability.identifiers import MAX_QUANTITY, is_channel, is_location, is_rule_id, is_sku

SKU_RULE = "1-128 characters of [A-Za-z0-9._:/-]"
LOCATION_RULE = "1-64 characters of [A-Za-z0-9._:/-]"
CHANNEL_RULE = "1-32 characters of [a-z0-9_-]"
RESERVATION_ID_RULE = "1-128 characters of [A-Za-z0-9._:-]"


class InvalidReservation(ValueError):
    """A value of a reservation request is not valid; the message names the field."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def shown(value: object) -> str:
    """A bounded preview of a refused value."""
    return preview(value, 80)


def _integer(value: object, low: int, high: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidReservation(
            f"{field} must be an integer from {low} to {high}, got {shown(value)}"
        )
    return value


def _text(value: object, valid: bool, rule: str, field: str) -> str:
    if not valid:
        raise InvalidReservation(f"{field} must be {rule}, got {shown(value)}")
    assert isinstance(value, str)
    return value


def reservation_id(value: object, field: str = "reservation_id") -> str:
    return _text(value, is_rule_id(value), RESERVATION_ID_RULE, field)


def channel(value: object, field: str = "channel") -> str:
    return _text(value, is_channel(value), CHANNEL_RULE, field)


def expires_in(value: object, field: str = "expires_in_s") -> int:
    return _integer(value, MIN_EXPIRES_IN_S, MAX_EXPIRES_IN_S, field)


def line_count(count: int, field: str = "lines") -> None:
    """Checked before any line is looked at."""
    if not 1 <= count <= MAX_LINES:
        raise InvalidReservation(f"{field} must be a list of 1 to {MAX_LINES} lines")


def line(index: int, sku: object, quantity: object, location_id: object | None) -> LineRequest:
    """Line ``index``'s values (``location_id`` None: the service places it)."""
    where = f"lines[{index}]"
    checked_sku = _text(sku, is_sku(sku), SKU_RULE, f"{where}.sku")
    checked_quantity = _integer(quantity, 1, MAX_QUANTITY, f"{where}.quantity")
    location = None
    if location_id is not None:
        location = _text(
            location_id, is_location(location_id), LOCATION_RULE, f"{where}.location_id"
        )
    return LineRequest(checked_sku, checked_quantity, location)


def request(
    rid: str, channel_name: str, expires_in_s: int, lines: Sequence[LineRequest]
) -> ReservationRequest:
    """The request of checked values, once no SKU is in two lines."""
    twice = duplicate_skus(lines)
    if twice:
        raise InvalidReservation(
            f"lines: each SKU may appear in one line only; repeated: {', '.join(twice)}"
        )
    return ReservationRequest(rid, channel_name, expires_in_s, tuple(lines))
