"""The pure parts of the gRPC reservation RPCs (services.grpc.reservations): request
checks equal to the HTTP API's, answers as messages and back, and the rich status of
an insufficient-stock answer (its per-line detail, bounded)."""

from __future__ import annotations

import grpc
import pytest

from availability.holds import LineRequest, ReservationRequest
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from services.grpc.messages import InvalidArgument, Malformed
from services.grpc.reservations import (
    DETAILS_BUDGET,
    MESSAGE_LINES,
    insufficient_stock,
    parse_extend,
    parse_reservation_id,
    parse_reserve,
    reservation_dict,
    reservation_message,
)
from services.http.errors import ApiError
from services.http.routes_reservations import parse_reserve_request
from services.reservations.errors import InsufficientStock


def test_a_valid_request_is_the_service_request() -> None:
    request = pb.ReserveRequest(
        reservation_id="cart-1",
        expires_in_s=900,
        lines=[
            pb.ReservationLine(sku="SKU-1", quantity=2),
            pb.ReservationLine(sku="SKU-2", quantity=1, location_id="DC-1"),
        ],
    )
    assert parse_reserve(request) == ReservationRequest(
        "cart-1",
        "online",  # proto3's empty channel
        900,
        (LineRequest("SKU-1", 2, None), LineRequest("SKU-2", 1, "DC-1")),
    )


@pytest.mark.parametrize(
    ("request_", "body"),
    [
        (pb.ReserveRequest(expires_in_s=5, lines=[pb.ReservationLine(sku="A", quantity=1)]),
         {"reservation_id": "", "expires_in_s": 5, "lines": [{"sku": "A", "quantity": 1}]}),
        (pb.ReserveRequest(reservation_id="r", expires_in_s=5),
         {"reservation_id": "r", "expires_in_s": 5, "lines": []}),
        (pb.ReserveRequest(reservation_id="r", lines=[pb.ReservationLine(sku="A", quantity=1)]),
         {"reservation_id": "r", "expires_in_s": 0, "lines": [{"sku": "A", "quantity": 1}]}),
        (pb.ReserveRequest(reservation_id="r", expires_in_s=5,
                           lines=[pb.ReservationLine(sku="A", quantity=-3)]),
         {"reservation_id": "r", "expires_in_s": 5, "lines": [{"sku": "A", "quantity": -3}]}),
        (pb.ReserveRequest(reservation_id="r", expires_in_s=5,
                           lines=[pb.ReservationLine(sku="A", quantity=1, location_id="x y")]),
         {"reservation_id": "r", "expires_in_s": 5,
          "lines": [{"sku": "A", "quantity": 1, "location_id": "x y"}]}),
        (pb.ReserveRequest(reservation_id="r", channel="WEB", expires_in_s=5,
                           lines=[pb.ReservationLine(sku="A", quantity=1)]),
         {"reservation_id": "r", "channel": "WEB", "expires_in_s": 5,
          "lines": [{"sku": "A", "quantity": 1}]}),
    ],
)  # fmt: skip
def test_refusals_say_what_the_http_api_says(
    request_: pb.ReserveRequest, body: dict[str, object]
) -> None:
    with pytest.raises(InvalidArgument) as grpc_refusal:
        parse_reserve(request_)
    with pytest.raises(ApiError) as http_refusal:
        parse_reserve_request(body)
    assert str(grpc_refusal.value) == http_refusal.value.message


def test_ids_and_extensions_are_checked() -> None:
    assert parse_reservation_id(pb.GetReservationRequest(reservation_id="a:b.c-1")) == "a:b.c-1"
    with pytest.raises(InvalidArgument, match="reservation_id must be"):
        parse_reservation_id(pb.ReleaseRequest(reservation_id="a/b"))
    with pytest.raises(InvalidArgument, match="not a valid"):
        parse_reservation_id(Malformed("the request is not a valid message"))
    assert parse_extend(pb.ExtendReservationRequest(reservation_id="r", expires_in_s=60)) == (
        "r",
        60,
    )
    with pytest.raises(InvalidArgument, match="expires_in_s must be an integer from 1 to 14400"):
        parse_extend(pb.ExtendReservationRequest(reservation_id="r", expires_in_s=14_401))


def test_a_reservation_message_round_trips_to_the_http_json() -> None:
    answer = {
        "reservation_id": "cart-1",
        "channel": "online",
        "status": "expired",
        "created_at": "2026-12-04T16:00:00.000001Z",
        "expires_at": "2026-12-04T16:15:00.000001Z",
        "lines": [{"sku": "SKU-1", "quantity": 2, "location_id": "S-1"}],
    }
    message = reservation_message(answer)
    assert message.status == pb.RESERVATION_STATUS_EXPIRED
    assert message.lines[0].HasField("location_id")
    assert reservation_dict(message) == answer


def test_insufficient_stock_lists_short_lines_first_within_the_budget() -> None:
    lines = [{"sku": "OK-1", "asked": 1, "available": 4}] + [
        {"sku": f"S{n:03d}" + "x" * 120, "asked": 5, "location_id": "L" * 64, "available": n % 5}
        for n in range(99)
    ]
    message, status = insufficient_stock(InsufficientStock(lines))
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert status.message == message
    assert message.startswith("not every line can be held; nothing is held: lines[1] S000")
    assert message.endswith(f"; and {99 - MESSAGE_LINES} more line(s) short")
    detail = pb.InsufficientStock()
    assert status.details[0].Unpack(detail)
    assert detail.ByteSize() <= DETAILS_BUDGET + 10
    assert 0 < len(detail.lines) < 99 and detail.omitted_lines == 100 - len(detail.lines)
    assert all(x.asked > x.available for x in detail.lines)  # the line that fits comes last
    assert [x.line for x in detail.lines] == list(range(1, len(detail.lines) + 1))
    assert len(status.SerializeToString()) < 6000


def test_a_small_shortage_is_given_whole() -> None:
    lines = [
        {"sku": "A", "asked": 1, "available": 1},
        {"sku": "B", "asked": 2, "location_id": "DC", "available": 0},
    ]
    message, status = insufficient_stock(InsufficientStock(lines))
    assert message == (
        "not every line can be held; nothing is held: lines[1] B at DC: asked 2, available 0"
    )
    detail = pb.InsufficientStock()
    assert status.details[0].Unpack(detail)
    assert [
        (x.line, x.sku, x.HasField("location_id"), x.asked, x.available) for x in detail.lines
    ] == [
        (1, "B", True, 2, 0),
        (0, "A", False, 1, 1),
    ]
    assert detail.omitted_lines == 0
