"""The reservation RPCs (``Reserve``, ``Release``, ``GetReservation``,
``ExtendReservation``): the HTTP API's ``/v1/reservations`` over gRPC, served by the
same ``services.reservations.service.ReservationService`` (README "Reservations").

Requests are checked with ``services.reservations.requests`` (the HTTP API's checks
and words); answers are the service's dicts as messages. The service's outcomes map
to status codes:

- ``InsufficientStock`` -> FAILED_PRECONDITION; the message lists the lines short of
  stock (asked, available), and the status details (``grpc-status-details-bin``, a
  ``google.rpc.Status``) carry an ``availability.v1.InsufficientStock`` with every
  line, the short ones first, within ``DETAILS_BUDGET`` bytes;
- ``Conflict`` (another body under the id) -> ALREADY_EXISTS; ``InProgress`` (a request
  with the id is being placed) -> ABORTED, which says "retry";
- ``NotActive`` (extend of a released or expired one) -> FAILED_PRECONDITION;
- ``NotFound`` -> NOT_FOUND; ``Unavailable`` (Redis or the broker) -> UNAVAILABLE.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.any_pb2 import Any as AnyMessage
from google.rpc import status_pb2

from availability.holds import ReservationRequest
from availability.identifiers import DEFAULT_CHANNEL
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from services.grpc.messages import InvalidArgument, Malformed, well_formed
from services.grpc.metrics import GrpcMetrics, timed
from services.reservations import requests as checks
from services.reservations.errors import (
    Conflict,
    InProgress,
    InsufficientStock,
    NotActive,
    NotFound,
    ReservationError,
    Unavailable,
)
from services.reservations.service import ReservationService

Answer = TypeVar("Answer")

#: The trailer of gRPC's rich error model: a serialized ``google.rpc.Status``.
STATUS_DETAILS_KEY = "grpc-status-details-bin"
#: Bytes of InsufficientStock lines at most: the trailer (base64 on the wire) must stay
#: well inside the 8 KiB of metadata clients accept by default.
DETAILS_BUDGET = 4000
#: Lines short of stock named in the status message, at most.
MESSAGE_LINES = 5

STATUS = {
    "held": pb.RESERVATION_STATUS_HELD,
    "released": pb.RESERVATION_STATUS_RELEASED,
    "expired": pb.RESERVATION_STATUS_EXPIRED,
}

ReserveContext = grpc.aio.ServicerContext[pb.ReserveRequest, pb.ReserveResponse]
ReleaseContext = grpc.aio.ServicerContext[pb.ReleaseRequest, pb.ReleaseResponse]
GetContext = grpc.aio.ServicerContext[pb.GetReservationRequest, pb.Reservation]
ExtendContext = grpc.aio.ServicerContext[pb.ExtendReservationRequest, pb.Reservation]


# --------------------------------------------------------------------------- requests


def _checked(check: Any, *args: Any) -> Any:
    try:
        return check(*args)
    except checks.InvalidReservation as exc:
        raise InvalidArgument(exc.message) from None


def parse_reserve(request: pb.ReserveRequest | Malformed) -> ReservationRequest:
    """The HTTP body's checks, in its order; the line count before any line."""
    message = well_formed(request)
    rid = _checked(checks.reservation_id, message.reservation_id)
    channel = _checked(checks.channel, message.channel or DEFAULT_CHANNEL)
    expires_in_s = _checked(checks.expires_in, message.expires_in_s)
    _checked(checks.line_count, len(message.lines))
    lines = [
        _checked(
            checks.line,
            index,
            line.sku,
            line.quantity,
            line.location_id if line.HasField("location_id") else None,
        )
        for index, line in enumerate(message.lines)
    ]
    result: ReservationRequest = _checked(checks.request, rid, channel, expires_in_s, lines)
    return result


def parse_reservation_id(
    request: pb.ReleaseRequest | pb.GetReservationRequest | Malformed,
) -> str:
    if isinstance(request, Malformed):
        raise InvalidArgument(request.reason)
    rid: str = _checked(checks.reservation_id, request.reservation_id)
    return rid


def parse_extend(request: pb.ExtendReservationRequest | Malformed) -> tuple[str, int]:
    message = well_formed(request)
    rid: str = _checked(checks.reservation_id, message.reservation_id)
    expires_in_s: int = _checked(checks.expires_in, message.expires_in_s)
    return rid, expires_in_s


# --------------------------------------------------------------------------- answers


def reservation_message(answer: Mapping[str, Any]) -> pb.Reservation:
    """The service's view of a reservation (the HTTP API's JSON) as a message."""
    return pb.Reservation(
        reservation_id=answer["reservation_id"],
        channel=answer["channel"],
        status=STATUS[answer["status"]],
        created_at=answer["created_at"],
        expires_at=answer["expires_at"],
        lines=[
            pb.ReservationLine(
                sku=line["sku"], quantity=line["quantity"], location_id=line["location_id"]
            )
            for line in answer["lines"]
        ],
    )


def reservation_dict(message: pb.Reservation) -> dict[str, Any]:
    """The message as the HTTP API's JSON of the reservation."""
    status = {number: name for name, number in STATUS.items()}[message.status]
    return {
        "reservation_id": message.reservation_id,
        "channel": message.channel,
        "status": status,
        "created_at": message.created_at,
        "expires_at": message.expires_at,
        "lines": [
            {"sku": line.sku, "quantity": line.quantity, "location_id": line.location_id}
            for line in message.lines
        ],
    }


# --------------------------------------------------------------------------- errors


def _shortages(lines: Sequence[Mapping[str, Any]]) -> list[pb.LineShortage]:
    """The service's 409 lines (request order) as messages, the short ones first."""
    shortages = [
        pb.LineShortage(
            line=index,
            sku=line["sku"],
            location_id=line.get("location_id"),
            asked=line["asked"],
            available=line["available"],
        )
        for index, line in enumerate(lines)
    ]
    return sorted(shortages, key=lambda s: s.asked <= s.available)  # stable: short first


def _described(shortage: pb.LineShortage) -> str:
    where = f" at {shortage.location_id}" if shortage.HasField("location_id") else ""
    return (
        f"lines[{shortage.line}] {shortage.sku}{where}: asked {shortage.asked},"
        f" available {shortage.available}"
    )


def insufficient_stock(exc: InsufficientStock) -> tuple[str, status_pb2.Status]:
    """The status message and the rich status of an ``InsufficientStock``."""
    shortages = _shortages(exc.lines)
    short = [s for s in shortages if s.asked > s.available]
    named = "; ".join(_described(s) for s in short[:MESSAGE_LINES])
    if len(short) > MESSAGE_LINES:
        named += f"; and {len(short) - MESSAGE_LINES} more line(s) short"
    message = exc.message + (f": {named}" if named else "")
    detail = pb.InsufficientStock()
    size = 0
    for shortage in shortages:
        size += shortage.ByteSize() + 4  # the field's tag and length
        if size > DETAILS_BUDGET:
            detail.omitted_lines = len(shortages) - len(detail.lines)
            break
        detail.lines.append(shortage)
    packed = AnyMessage()
    packed.Pack(detail)
    code = grpc.StatusCode.FAILED_PRECONDITION.value[0]
    return message, status_pb2.Status(code=code, message=message, details=[packed])


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: ReservationError) -> NoReturn:
    """End the call with the status of the service's ``exc``."""
    if isinstance(exc, InsufficientStock):
        message, status = insufficient_stock(exc)
        await context.abort(
            grpc.StatusCode.FAILED_PRECONDITION,
            message,
            trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),),
        )
    if isinstance(exc, Conflict):
        await context.abort(grpc.StatusCode.ALREADY_EXISTS, exc.message)
    if isinstance(exc, InProgress):
        await context.abort(grpc.StatusCode.ABORTED, exc.message)
    if isinstance(exc, NotActive):
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, exc.message)
    if isinstance(exc, NotFound):
        await context.abort(grpc.StatusCode.NOT_FOUND, exc.message)
    if isinstance(exc, Unavailable):
        await context.abort(grpc.StatusCode.UNAVAILABLE, exc.message)
    raise exc


async def answered(
    context: grpc.aio.ServicerContext[Any, Any], handle: Callable[[], Awaitable[Answer]]
) -> Answer:
    """``handle()``'s answer; a request that does not parse ends the call with
    INVALID_ARGUMENT (the checks' message), a refusal of the service with its status."""
    try:
        return await handle()
    except InvalidArgument as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except ReservationError as exc:
        await abort(context, exc)


# --------------------------------------------------------------------------- handlers


class ReservationRpcs:
    """The reservation handlers of ``AvailabilityService`` (a base class of it)."""

    reservations: ReservationService
    metrics: GrpcMetrics | None

    @timed
    async def Reserve(
        self, request: pb.ReserveRequest | Malformed, context: ReserveContext
    ) -> pb.ReserveResponse:
        async def reserve() -> pb.ReserveResponse:
            answer, repeated = await self.reservations.reserve(parse_reserve(request))
            return pb.ReserveResponse(reservation=reservation_message(answer), replayed=repeated)

        return await answered(context, reserve)

    @timed
    async def Release(
        self, request: pb.ReleaseRequest | Malformed, context: ReleaseContext
    ) -> pb.ReleaseResponse:
        async def release() -> pb.ReleaseResponse:
            released = await self.reservations.release(parse_reservation_id(request))
            return pb.ReleaseResponse(already_released=not released)

        return await answered(context, release)

    @timed
    async def GetReservation(
        self, request: pb.GetReservationRequest | Malformed, context: GetContext
    ) -> pb.Reservation:
        async def get() -> pb.Reservation:
            return reservation_message(await self.reservations.get(parse_reservation_id(request)))

        return await answered(context, get)

    @timed
    async def ExtendReservation(
        self, request: pb.ExtendReservationRequest | Malformed, context: ExtendContext
    ) -> pb.Reservation:
        async def extend() -> pb.Reservation:
            rid, expires_in_s = parse_extend(request)
            return reservation_message(await self.reservations.extend(rid, expires_in_s))

        return await answered(context, extend)
