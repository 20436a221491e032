"""Pure parts of the gRPC API: request validation and answer <-> message conversion.

Answers are the dicts of contract section 6 (``availability.ats.view``, the stored
answer tails, ``unknown_sku_view``), so a gRPC answer carries exactly the numbers of
the HTTP one. Validation uses the contract's validators and says what a field must
be in the same words as the HTTP API.

Sizes are checked before anything is looked at item by item, so a request with a
million SKUs costs a length check. A request whose bytes are not a valid message
reaches its handler as ``Malformed`` (see ``decoder``) and is refused like any other
invalid argument.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message

from availability.display import preview
from availability.identifiers import DEFAULT_CHANNEL, is_channel, is_location, is_sku
from availability.watch_thresholds import Thresholds
from services.grpc.gen.availability.v1 import availability_pb2 as pb

MAX_BATCH_SKUS = 500
#: A watch's SKUs as listed, duplicates included (at most MAX_BATCH_SKUS distinct).
MAX_WATCH_ENTRIES = 2 * MAX_BATCH_SKUS
MAX_WATCH_LOCATIONS = 100

SKU_RULE = "1-128 characters of [A-Za-z0-9._:/-]"
LOCATION_RULE = "1-64 characters of [A-Za-z0-9._:/-]"
CHANNEL_RULE = "1-32 characters of [a-z0-9_-]"


class InvalidArgument(ValueError):
    """A request field is not valid; the message names it (-> INVALID_ARGUMENT)."""


@dataclass(frozen=True, slots=True)
class Malformed:
    """A request whose bytes do not parse as its message type."""

    reason: str


M = TypeVar("M", bound=Message)


def decoder(message_type: type[M]) -> Callable[[bytes], M | Malformed]:
    """A request deserializer that answers ``Malformed`` instead of raising: grpc.aio
    answers a deserializer's exception with UNKNOWN (and logs a traceback per call),
    where a client's bad bytes deserve INVALID_ARGUMENT and no log."""
    parse = message_type.FromString
    reason = f"the request is not a valid {message_type.DESCRIPTOR.full_name} message"

    def decode(data: bytes) -> M | Malformed:
        try:
            return parse(data)
        except DecodeError:
            return Malformed(reason)

    return decode


def well_formed(request: M | Malformed) -> M:
    if isinstance(request, Malformed):
        raise InvalidArgument(request.reason)
    return request


def require_sku(value: str, field: str = "sku") -> str:
    if not is_sku(value):
        raise InvalidArgument(f"{field} must be {SKU_RULE}, got {preview(value)}")
    return value


def require_location(value: str, field: str = "location_id") -> str:
    if not is_location(value):
        raise InvalidArgument(f"{field} must be {LOCATION_RULE}, got {preview(value)}")
    return value


def resolve_channel(value: str, field: str = "channel") -> str:
    """The channel to answer for: empty means ``online`` (proto3 has no "unset")."""
    channel = value or DEFAULT_CHANNEL
    if not is_channel(channel):
        raise InvalidArgument(f"{field} must be {CHANNEL_RULE}, got {preview(value)}")
    return channel


def parse_get(
    request: pb.GetAvailabilityRequest | Malformed,
) -> tuple[str, str, str | None]:
    """(sku, channel, location_id or None), checked in the HTTP API's order."""
    request = well_formed(request)
    sku = require_sku(request.sku)
    channel = resolve_channel(request.channel)
    location_id = None
    if request.HasField("location_id"):
        location_id = require_location(request.location_id)
    return sku, channel, location_id


def parse_batch(
    request: pb.BatchGetAvailabilityRequest | Malformed,
) -> tuple[list[str], str]:
    """(skus, channel): at most 500 SKUs, each valid, then the channel."""
    request = well_formed(request)
    count = len(request.skus)
    if count > MAX_BATCH_SKUS:
        raise InvalidArgument(f"skus holds {count} SKUs; at most {MAX_BATCH_SKUS} allowed")
    skus = list(request.skus)
    for index, sku in enumerate(skus):
        require_sku(sku, f"skus[{index}]")
    return skus, resolve_channel(request.channel)


def parse_watch(
    request: pb.WatchAvailabilityRequest | Malformed,
) -> tuple[list[str], str, list[str] | None, Thresholds]:
    """(distinct skus in request order, channel, location_ids or None for all,
    thresholds)."""
    request = well_formed(request)
    # The counts first: nothing below looks at a request larger than these.
    listed = len(request.skus)
    if listed > MAX_WATCH_ENTRIES:
        raise InvalidArgument(
            f"skus lists {listed} SKUs; at most {MAX_WATCH_ENTRIES} allowed"
            f" ({MAX_BATCH_SKUS} distinct)"
        )
    locations = len(request.location_ids)
    if locations > MAX_WATCH_LOCATIONS:
        raise InvalidArgument(
            f"location_ids lists {locations} locations; at most {MAX_WATCH_LOCATIONS} allowed"
        )
    skus = list(dict.fromkeys(request.skus))
    if not skus:
        raise InvalidArgument("skus must name at least one SKU")
    if len(skus) > MAX_BATCH_SKUS:
        raise InvalidArgument(
            f"skus holds {len(skus)} distinct SKUs; at most {MAX_BATCH_SKUS} allowed"
        )
    for index, sku in enumerate(request.skus):
        require_sku(sku, f"skus[{index}]")
    channel = resolve_channel(request.channel)
    for index, location_id in enumerate(request.location_ids):
        require_location(location_id, f"location_ids[{index}]")
    return skus, channel, list(request.location_ids) or None, parse_thresholds(request)


def parse_thresholds(request: pb.WatchAvailabilityRequest) -> Thresholds:
    """A watch's ``low_stock`` (at least 0) and ``min_delta`` (at least 1); unset: None."""
    low_stock = request.low_stock if request.HasField("low_stock") else None
    if low_stock is not None and low_stock < 0:
        raise InvalidArgument(f"low_stock must be at least 0, got {low_stock}")
    min_delta = request.min_delta if request.HasField("min_delta") else None
    if min_delta is not None and min_delta < 1:
        raise InvalidArgument(f"min_delta must be at least 1, got {min_delta}")
    return Thresholds(low_stock, min_delta)


def location_message(location: Mapping[str, Any]) -> pb.LocationAvailability:
    return pb.LocationAvailability(
        location_id=location["location_id"],
        on_hand=location["on_hand"],
        reserved=location["reserved"],
        in_transit=location["in_transit"],
        damaged=location["damaged"],
        safety_stock=location["safety_stock"],
        buffer=location["buffer"],
        ats=location["ats"],
    )


def availability_message(answer: Mapping[str, Any]) -> pb.Availability:
    """A section-6 answer (or an unknown SKU's batch item, without ``channel``)."""
    return pb.Availability(
        sku=answer["sku"],
        channel=answer.get("channel", ""),
        ats=answer["ats"],
        locations=[location_message(loc) for loc in answer["locations"]],
    )


def watch_message(
    answer: Mapping[str, Any], version: int, initial: bool
) -> pb.WatchAvailabilityResponse:
    return pb.WatchAvailabilityResponse(
        availability=availability_message(answer), version=version, initial=initial
    )


def batch_message(
    channel: str, answers: Sequence[Mapping[str, Any]]
) -> pb.BatchGetAvailabilityResponse:
    return pb.BatchGetAvailabilityResponse(
        channel=channel, items=[availability_message(answer) for answer in answers]
    )


_LOCATION_FIELDS = (
    "location_id",
    "on_hand",
    "reserved",
    "in_transit",
    "damaged",
    "safety_stock",
    "buffer",
    "ats",
)


def availability_dict(message: pb.Availability) -> dict[str, Any]:
    """The message as the HTTP API's JSON object (no ``channel`` when it is empty)."""
    answer: dict[str, Any] = {"sku": message.sku}
    if message.channel:
        answer["channel"] = message.channel
    answer["ats"] = message.ats
    answer["locations"] = [
        {name: getattr(loc, name) for name in _LOCATION_FIELDS} for loc in message.locations
    ]
    return answer


def batch_dict(message: pb.BatchGetAvailabilityResponse) -> dict[str, Any]:
    return {"channel": message.channel, "items": [availability_dict(i) for i in message.items]}
