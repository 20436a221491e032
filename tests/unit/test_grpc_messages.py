"""The pure parts of the gRPC API: request validation and answer <-> message conversion."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from availability.ats import LocationAvailability, SkuAvailability, unknown_sku_view, view
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from services.grpc.messages import (
    InvalidArgument,
    availability_dict,
    availability_message,
    batch_dict,
    batch_message,
    parse_batch,
    parse_get,
)

RECORD = SkuAvailability(
    "AB/1",
    (
        LocationAvailability("N1", -3, 0, 0, 0, 1, {}),
        LocationAvailability("S1", 17, 2, 5, 1, 1, {"marketplace": 2}),
        LocationAvailability("W1", 2**40, 0, 0, 0, 0, {"marketplace": 3}),
    ),
    None,
)


@pytest.mark.parametrize("channel", ["online", "marketplace", "store"])
@pytest.mark.parametrize("location", [None, "S1", "N1", "ELSEWHERE"])
def test_view_round_trips_through_the_message(channel: str, location: str | None) -> None:
    answer = view(RECORD, channel, location)
    message = availability_message(answer)
    assert availability_dict(message) == answer
    assert pb.Availability.FromString(message.SerializeToString()) == message


def test_negative_on_hand_and_large_numbers_survive() -> None:
    message = availability_message(view(RECORD, "online"))
    assert [loc.on_hand for loc in message.locations] == [-3, 17, 2**40]
    assert message.ats == 14 + 2**40


def test_unknown_sku_item_has_no_channel() -> None:
    message = availability_message(unknown_sku_view("NOPE"))
    assert (message.sku, message.channel, message.ats, list(message.locations)) == (
        "NOPE", "", 0, [],
    )  # fmt: skip
    assert availability_dict(message) == {"sku": "NOPE", "ats": 0, "locations": []}


def test_batch_round_trip() -> None:
    answers = [view(RECORD, "marketplace"), unknown_sku_view("NOPE")]
    message = batch_message("marketplace", answers)
    assert batch_dict(message) == {"channel": "marketplace", "items": answers}


def test_parse_get() -> None:
    assert parse_get(pb.GetAvailabilityRequest(sku="A")) == ("A", "online", None)
    request = pb.GetAvailabilityRequest(sku="A/b:c", channel="pos", location_id="S1")
    assert parse_get(request) == ("A/b:c", "pos", "S1")


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.GetAvailabilityRequest(), "sku must be"),
        (pb.GetAvailabilityRequest(sku="a b"), "sku must be"),
        (pb.GetAvailabilityRequest(sku="A", channel="Web"), "channel must be"),
        (pb.GetAvailabilityRequest(sku="A", channel="x" * 33), "channel must be"),
        (pb.GetAvailabilityRequest(sku="A", location_id=""), "location_id must be"),
        (pb.GetAvailabilityRequest(sku="A", location_id="x" * 65), "location_id must be"),
    ],
)
def test_parse_get_rejects(request_: pb.GetAvailabilityRequest, field: str) -> None:
    with pytest.raises(InvalidArgument, match=field):
        parse_get(request_)


def test_parse_batch() -> None:
    assert parse_batch(pb.BatchGetAvailabilityRequest()) == ([], "online")
    request = pb.BatchGetAvailabilityRequest(skus=["A", "A", "B"] * 100, channel="pos")
    assert parse_batch(request) == (["A", "A", "B"] * 100, "pos")
    with pytest.raises(InvalidArgument, match=r"skus\[1\] must be"):
        parse_batch(pb.BatchGetAvailabilityRequest(skus=["A", ""]))
    with pytest.raises(InvalidArgument, match="501 SKUs; at most 500"):
        parse_batch(pb.BatchGetAvailabilityRequest(skus=["A"] * 501))
    with pytest.raises(InvalidArgument, match="channel must be"):
        parse_batch(pb.BatchGetAvailabilityRequest(skus=["A"], channel="A"))


@given(st.text(max_size=200), st.text(max_size=40))
def test_parse_get_raises_only_invalid_argument(sku: str, channel: str) -> None:
    try:
        parse_get(pb.GetAvailabilityRequest(sku=sku, channel=channel))
    except InvalidArgument as exc:
        assert "must be" in str(exc)
