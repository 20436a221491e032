"""Input events (contract section 2): frozen models and their validation.

``parse_event`` turns the bytes of a Kafka message into one of the event models or
raises ``InvalidEvent`` whose ``reason`` says exactly what is wrong; the stream
processor puts that reason into the dead-letter record. Timestamps are held as
integer microseconds since the epoch (UTC).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from availability.display import preview
from availability.identifiers import (
    MAX_ID_LENGTH,
    MAX_QUANTITY,
    format_timestamp,
    is_channel,
    is_location,
    is_sku,
    parse_timestamp,
)


class InvalidEvent(ValueError):
    """An event that must not be applied; ``reason`` is for the dead-letter record."""

    def __init__(self, reason: str, *, event_id: str | None = None, sku: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id
        self.sku = sku

    @property
    def kind(self) -> str:
        """The reason's category, one of :data:`INVALID_KINDS` (a bounded metric label;
        the reason itself quotes the offending value)."""
        return invalid_kind(self.reason)


#: Reason prefix -> category, first match wins.
_KIND_BY_PREFIX = (
    ("empty message", "empty_message"),
    ("not valid JSON", "malformed_json"),
    ("event must be a JSON object", "not_an_object"),
    ("missing required field", "missing_field"),
    ("unknown event type", "unknown_type"),
    ("field ", "invalid_field"),
    # Refusals that are not about the event's form (the stream processor's):
    ("timestamp in the future", "future_timestamp"),
    ("too old", "too_old"),
    ("internal error", "internal_error"),
)
INVALID_KINDS = (*(kind for _, kind in _KIND_BY_PREFIX), "invalid")


def invalid_kind(reason: str) -> str:
    for prefix, kind in _KIND_BY_PREFIX:
        if reason.startswith(prefix):
            return kind
    return "invalid"


@dataclass(frozen=True, slots=True)
class ErpBalance:
    event_id: str
    sku: str
    location_id: str
    on_hand: int
    as_of: int


@dataclass(frozen=True, slots=True)
class ErpBaselineReset:
    """An operator's fresh count (``services.cli baseline reset``): it replaces the
    location's baseline as of ``as_of`` and voids the baselines named in ``voids``
    for good (README "Baseline reset")."""

    event_id: str
    sku: str
    location_id: str
    on_hand: int
    as_of: int
    voids: tuple[str, ...]
    operator: str


#: Balances one reset may void.
MAX_VOIDS = 100


@dataclass(frozen=True, slots=True)
class PosSale:
    event_id: str
    sku: str
    location_id: str
    quantity: int
    occurred_at: int


@dataclass(frozen=True, slots=True)
class PosReturn:
    event_id: str
    sku: str
    location_id: str
    quantity: int
    occurred_at: int
    disposition: Literal["sellable", "damaged"] = "sellable"


@dataclass(frozen=True, slots=True)
class TransferShipped:
    event_id: str
    sku: str
    transfer_id: str
    from_location: str
    to_location: str
    quantity: int
    occurred_at: int


@dataclass(frozen=True, slots=True)
class TransferReceived:
    event_id: str
    sku: str
    transfer_id: str
    from_location: str
    to_location: str
    quantity: int
    occurred_at: int


@dataclass(frozen=True, slots=True)
class ReservationCreated:
    event_id: str
    sku: str
    reservation_id: str
    location_id: str
    quantity: int
    occurred_at: int
    expires_at: int | None = None
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class ReservationReleased:
    event_id: str
    sku: str
    reservation_id: str
    location_id: str
    occurred_at: int


@dataclass(frozen=True, slots=True)
class ReservationFulfilled:
    event_id: str
    sku: str
    reservation_id: str
    location_id: str
    quantity: int
    occurred_at: int


Event = (
    ErpBalance
    | ErpBaselineReset
    | PosSale
    | PosReturn
    | TransferShipped
    | TransferReceived
    | ReservationCreated
    | ReservationReleased
    | ReservationFulfilled
)


class _Fields:
    """Typed access to the fields of one decoded event, raising InvalidEvent."""

    __slots__ = ("_data", "event_id", "sku")

    def __init__(self, data: Mapping[str, Any], event_id: str, sku: str) -> None:
        self._data = data
        self.event_id = event_id
        self.sku = sku

    def fail(self, reason: str) -> InvalidEvent:
        return InvalidEvent(reason, event_id=self.event_id, sku=self.sku)

    def get(self, name: str) -> Any:
        return self._data.get(name)

    def _required(self, name: str) -> Any:
        value = self.get(name)
        if value is None:
            raise self.fail(f"missing required field '{name}'")
        return value

    def location(self, name: str) -> str:
        value = self._required(name)
        if not is_location(value):
            raise self.fail(
                f"field '{name}' must be a location id (1-64 characters of [A-Za-z0-9._:/-]),"
                f" got {preview(value)}"
            )
        return str(value)

    def reference(self, name: str) -> str:
        value = self._required(name)
        if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
            raise self.fail(f"field '{name}' must be a non-empty string of at most 128 characters")
        return value

    def quantity(self, name: str = "quantity", *, allow_zero: bool = False) -> int:
        value = self._required(name)
        low = 0 if allow_zero else 1
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not low <= value <= MAX_QUANTITY
        ):
            bound = ">= 0" if allow_zero else "> 0"
            raise self.fail(
                f"field '{name}' must be an integer {bound} and at most {MAX_QUANTITY},"
                f" got {preview(value)}"
            )
        return value

    def timestamp(self, name: str, *, optional: bool = False) -> int | None:
        value = self.get(name)
        if value is None:
            if optional:
                return None
            raise self.fail(f"missing required field '{name}'")
        if not isinstance(value, str):
            raise self.fail(f"field '{name}' must be an RFC 3339 string, got {preview(value)}")
        try:
            return parse_timestamp(value)
        except ValueError as exc:
            raise self.fail(f"field '{name}': {exc}") from None

    def required_timestamp(self, name: str) -> int:
        value = self.timestamp(name)
        assert value is not None
        return value


def _erp_balance(f: _Fields) -> Event:
    return ErpBalance(
        f.event_id,
        f.sku,
        f.location("location_id"),
        f.quantity("on_hand", allow_zero=True),
        f.required_timestamp("as_of"),
    )


def _baseline_reset(f: _Fields) -> Event:
    voids = f.get("voids")
    if voids is None:
        voids = []
    if (
        not isinstance(voids, list)
        or len(voids) > MAX_VOIDS
        or not all(isinstance(v, str) and 0 < len(v) <= MAX_ID_LENGTH for v in voids)
    ):
        raise f.fail(
            f"field 'voids' must be a list of at most {MAX_VOIDS} event ids"
            f" (non-empty strings of at most {MAX_ID_LENGTH} characters)"
        )
    return ErpBaselineReset(
        f.event_id,
        f.sku,
        f.location("location_id"),
        f.quantity("on_hand", allow_zero=True),
        f.required_timestamp("as_of"),
        tuple(sorted(set(voids))),
        f.reference("operator"),
    )


def _pos_sale(f: _Fields) -> Event:
    return PosSale(
        f.event_id,
        f.sku,
        f.location("location_id"),
        f.quantity(),
        f.required_timestamp("occurred_at"),
    )


def _pos_return(f: _Fields) -> Event:
    disposition = f.get("disposition")
    if disposition is None:
        disposition = "sellable"
    if disposition not in ("sellable", "damaged"):
        raise f.fail(
            f"field 'disposition' must be 'sellable' or 'damaged', got {preview(disposition)}"
        )
    return PosReturn(
        f.event_id,
        f.sku,
        f.location("location_id"),
        f.quantity(),
        f.required_timestamp("occurred_at"),
        disposition,
    )


def _transfer(kind: type[TransferShipped] | type[TransferReceived]) -> Callable[[_Fields], Event]:
    def parse(f: _Fields) -> Event:
        return kind(
            f.event_id,
            f.sku,
            f.reference("transfer_id"),
            f.location("from_location"),
            f.location("to_location"),
            f.quantity(),
            f.required_timestamp("occurred_at"),
        )

    return parse


def _reservation_created(f: _Fields) -> Event:
    channel = f.get("channel")
    if channel is not None and not is_channel(channel):
        raise f.fail(f"field 'channel' must match [a-z0-9_-]{{1,32}}, got {preview(channel)}")
    return ReservationCreated(
        f.event_id,
        f.sku,
        f.reference("reservation_id"),
        f.location("location_id"),
        f.quantity(),
        f.required_timestamp("occurred_at"),
        f.timestamp("expires_at", optional=True),
        channel,
    )


def _reservation_released(f: _Fields) -> Event:
    return ReservationReleased(
        f.event_id,
        f.sku,
        f.reference("reservation_id"),
        f.location("location_id"),
        f.required_timestamp("occurred_at"),
    )


def _reservation_fulfilled(f: _Fields) -> Event:
    return ReservationFulfilled(
        f.event_id,
        f.sku,
        f.reference("reservation_id"),
        f.location("location_id"),
        f.quantity(),
        f.required_timestamp("occurred_at"),
    )


_PARSERS: dict[str, Callable[[_Fields], Event]] = {
    "erp.balance": _erp_balance,
    "erp.baseline_reset": _baseline_reset,
    "pos.sale": _pos_sale,
    "pos.return": _pos_return,
    "transfer.shipped": _transfer(TransferShipped),
    "transfer.received": _transfer(TransferReceived),
    "reservation.created": _reservation_created,
    "reservation.released": _reservation_released,
    "reservation.fulfilled": _reservation_fulfilled,
}


def event_type(event: Event) -> str:
    return _TYPE_NAMES[type(event)]


def event_to_dict(event: Event) -> dict[str, Any]:
    """The event's canonical JSON object: what ``parse_event`` reads back as ``event``."""
    data: dict[str, Any] = {"type": event_type(event)}
    for name in event.__slots__:
        value = getattr(event, name)
        if name in _TIME_FIELDS and value is not None:
            value = format_timestamp(value)
        elif name == "voids":
            value = list(value)
        data[name] = value
    return data


_TIME_FIELDS = frozenset({"as_of", "occurred_at", "expires_at"})


def event_time(event: Event) -> int:
    """When the event happened (µs): ``as_of`` of a balance or reset, else ``occurred_at``."""
    return event.as_of if isinstance(event, ErpBalance | ErpBaselineReset) else event.occurred_at


#: Events whose ids (or reservation lines) the state forgets after the horizon
#: (``availability.horizon.prune``): older ones are refused as too old.
_FORGOTTEN_AFTER_HORIZON = (
    TransferShipped,
    TransferReceived,
    ReservationCreated,
    ReservationReleased,
    ReservationFulfilled,
)


def check_time(event: Event, now: int, max_future_skew: int, horizon: int) -> None:
    """Refuse (InvalidEvent) an event dated more than ``max_future_skew`` µs after
    ``now``, or one older than the state keeps what makes a repeat of it harmless.

    The caller passes its clock (``now``, µs); nothing here reads one. Too old:
    a transfer leg, a damaged return or a reservation event before ``now - horizon``
    (the state forgets their ids and lines after that: ``availability.horizon.prune``),
    and a baseline reset before ``now - max_future_skew`` (the state forgets sales
    that a baseline older than that contains, which a later reset could need).
    """
    moment = event_time(event)
    name = "as_of" if isinstance(event, ErpBalance | ErpBaselineReset) else "occurred_at"
    if moment > now + max_future_skew:
        raise InvalidEvent(
            f"timestamp in the future: {name} {format_timestamp(moment)} is more than"
            f" {max_future_skew // 1_000_000} s after the worker's clock"
            f" ({format_timestamp(now)})",
            event_id=event.event_id,
            sku=event.sku,
        )
    if isinstance(event, ErpBaselineReset):
        oldest, window = now - max_future_skew, max_future_skew
    elif isinstance(event, _FORGOTTEN_AFTER_HORIZON) or (
        isinstance(event, PosReturn) and event.disposition == "damaged"
    ):
        oldest, window = now - horizon, horizon
    else:
        return
    if moment < oldest:
        raise InvalidEvent(
            f"too old: {name} {format_timestamp(moment)} is more than"
            f" {window // 1_000_000} s before the worker's clock ({format_timestamp(now)})",
            event_id=event.event_id,
            sku=event.sku,
        )


_TYPE_NAMES: dict[type, str] = {
    ErpBalance: "erp.balance",
    ErpBaselineReset: "erp.baseline_reset",
    PosSale: "pos.sale",
    PosReturn: "pos.return",
    TransferShipped: "transfer.shipped",
    TransferReceived: "transfer.received",
    ReservationCreated: "reservation.created",
    ReservationReleased: "reservation.released",
    ReservationFulfilled: "reservation.fulfilled",
}


def parse_event(raw: bytes | str | None) -> Event:
    """Decode and validate one event. Unknown extra fields are ignored."""
    if raw is None:
        raise InvalidEvent("empty message (no value)")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not valid JSON: {exc}") from None
    return event_from_dict(data)


def event_from_dict(data: object) -> Event:
    if not isinstance(data, dict):
        raise InvalidEvent(f"event must be a JSON object, got {type(data).__name__}")
    event_id = data.get("event_id")
    sku = data.get("sku")
    known_id = event_id if isinstance(event_id, str) else None
    known_sku = sku if isinstance(sku, str) else None
    if event_id is None:
        raise InvalidEvent("missing required field 'event_id'", sku=known_sku)
    if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_ID_LENGTH:
        raise InvalidEvent(
            "field 'event_id' must be a non-empty string of at most 128 characters", sku=known_sku
        )
    kind = data.get("type")
    if kind is None:
        raise InvalidEvent("missing required field 'type'", event_id=known_id, sku=known_sku)
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        raise InvalidEvent(f"unknown event type {preview(kind)}", event_id=known_id, sku=known_sku)
    if sku is None:
        raise InvalidEvent("missing required field 'sku'", event_id=known_id)
    if not is_sku(sku):
        raise InvalidEvent(
            f"field 'sku' must be 1-128 characters of [A-Za-z0-9._:/-], got {preview(sku)}",
            event_id=known_id,
        )
    return parser(_Fields(data, event_id, sku))
