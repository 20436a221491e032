"""The pure parts of the gRPC API: request validation and answer <-> message conversion."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from availability.ats import LocationAvailability, SkuAvailability, unknown_sku_view, view
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from services.grpc.messages import (
    InvalidArgument,
    Malformed,
    availability_dict,
    availability_message,
    batch_dict,
    batch_message,
    decoder,
    parse_batch,
    parse_get,
    parse_watch,
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


def test_sizes_are_checked_before_the_items() -> None:
    """A million SKUs (every one invalid) are refused for their number, at the cost of
    a length check: no SKU is looked at."""
    million = ["not a sku"] * 1_000_000
    started = time.perf_counter()
    with pytest.raises(InvalidArgument, match="1000000 SKUs; at most 500 allowed"):
        parse_batch(pb.BatchGetAvailabilityRequest(skus=million))
    with pytest.raises(InvalidArgument, match=r"skus lists 1000000 SKUs; at most 1000 allowed"):
        parse_watch(pb.WatchAvailabilityRequest(skus=million))
    many_locations = pb.WatchAvailabilityRequest(skus=["A"], location_ids=["bad id"] * 101)
    with pytest.raises(InvalidArgument, match="location_ids lists 101 locations; at most 100"):
        parse_watch(many_locations)
    # Building the requests above is most of this; the checks themselves are microseconds.
    assert time.perf_counter() - started < 5


def test_bytes_that_are_not_the_message_are_an_invalid_argument() -> None:
    decode = decoder(pb.GetAvailabilityRequest)
    assert decode(pb.GetAvailabilityRequest(sku="A").SerializeToString()) == (
        pb.GetAvailabilityRequest(sku="A")
    )
    garbage = decode(b"\xff\xff\xff\xff")
    assert garbage == Malformed(
        "the request is not a valid availability.v1.GetAvailabilityRequest message"
    )
    with pytest.raises(InvalidArgument, match=r"valid availability\.v1\.GetAvail"):
        parse_get(garbage)
    with pytest.raises(InvalidArgument, match="not a valid"):
        parse_batch(decoder(pb.BatchGetAvailabilityRequest)(b"\x0a\x05ab"))  # truncated
    with pytest.raises(InvalidArgument, match="not a valid"):
        parse_watch(decoder(pb.WatchAvailabilityRequest)(b"\x0a\x02\xc3\x28"))  # bad UTF-8


@given(st.binary(max_size=300))
def test_any_bytes_give_a_request_or_invalid_argument(data: bytes) -> None:
    """Whatever arrives: a parsed request or INVALID_ARGUMENT, never another error."""
    checks: list[Callable[[], object]] = [
        lambda: parse_get(decoder(pb.GetAvailabilityRequest)(data)),
        lambda: parse_batch(decoder(pb.BatchGetAvailabilityRequest)(data)),
        lambda: parse_watch(decoder(pb.WatchAvailabilityRequest)(data)),
    ]
    for check in checks:
        with contextlib.suppress(InvalidArgument):
            check()
