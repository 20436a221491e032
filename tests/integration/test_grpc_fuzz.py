"""Malformed and oversized requests to every RPC of a live gRPC server.

Inputs come from hypothesis (bytes, requests with odd field values and counts, valid
requests with bytes flipped, cut or added) and from hand-made wire-level cases. The
expected answer of each is computed from the request alone: bytes that do not decode,
or a request ``services.grpc.messages`` refuses, must get INVALID_ARGUMENT with that
very message; anything else is served. Without a credential every one of them is
UNAUTHENTICATED; beyond the receive limit, RESOURCE_EXHAUSTED. The server must answer
every call, log no traceback, and go on serving. Synchronous gRPC: hypothesis drives
plain functions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from infra.config import Settings
from infra.store import AvailabilityStore
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from services.grpc.messages import InvalidArgument, decoder, parse_batch, parse_get, parse_watch
from services.grpc.reservations import parse_extend, parse_reservation_id, parse_reserve
from tests.integration.conftest import StartService
from tests.integration.grpc_support import (
    AUTH,
    SERVICE,
    SKU,
    availability_of,
    forget_store,
    stock_events,
)
from tests.integration.support import ProcessHandle, mark_serving_layer_complete

MAX_RECEIVE = 1024 * 1024  # the default AVAILABILITY_GRPC_MAX_RECEIVE_MESSAGE_BYTES

#: Per method: how the server decodes and checks its request.
CHECKS: dict[str, Callable[[bytes], object]] = {
    "GetAvailability": lambda data: parse_get(decoder(pb.GetAvailabilityRequest)(data)),
    "BatchGetAvailability": lambda data: parse_batch(decoder(pb.BatchGetAvailabilityRequest)(data)),
    "WatchAvailability": lambda data: parse_watch(decoder(pb.WatchAvailabilityRequest)(data)),
    "Reserve": lambda data: parse_reserve(decoder(pb.ReserveRequest)(data)),
    "Release": lambda data: parse_reservation_id(decoder(pb.ReleaseRequest)(data)),
    "GetReservation": lambda data: parse_reservation_id(decoder(pb.GetReservationRequest)(data)),
    "ExtendReservation": lambda data: parse_extend(decoder(pb.ExtendReservationRequest)(data)),
}
#: A reservation's outcomes other than OK: not enough stock (or released, expired),
#: another body under the id, one being placed, an unknown id.
RESERVATION_OUTCOMES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.NOT_FOUND,
}
SERVED = {
    # A valid Get of a SKU never seen is NOT_FOUND.
    "GetAvailability": {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND},
    "BatchGetAvailability": {grpc.StatusCode.OK},
    "WatchAvailability": {grpc.StatusCode.OK},  # its first message arrived
    "Reserve": RESERVATION_OUTCOMES - {grpc.StatusCode.NOT_FOUND},
    "Release": RESERVATION_OUTCOMES - {grpc.StatusCode.ALREADY_EXISTS},
    "GetReservation": RESERVATION_OUTCOMES - {grpc.StatusCode.ALREADY_EXISTS},
    "ExtendReservation": RESERVATION_OUTCOMES - {grpc.StatusCode.ALREADY_EXISTS},
}
fuzz = hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Answer:
    code: grpc.StatusCode
    details: str


@dataclass
class Target:
    channel: grpc.Channel
    process: ProcessHandle

    def call(self, method: str, data: bytes, metadata: Any = AUTH) -> Answer:
        path = f"/{SERVICE}/{method}"
        try:
            if method == "WatchAvailability":
                stream = self.channel.unary_stream(path)(data, metadata=metadata, timeout=10)
                next(stream)  # the first initial figures: the watch is served
                stream.cancel()
            else:
                self.channel.unary_unary(path)(data, metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            return Answer(exc.code(), exc.details() or "")
        return Answer(grpc.StatusCode.OK, "")

    def check(self, method: str, data: bytes) -> None:
        """``data`` gets what the server's own decoding and checks say it must."""
        answer = self.call(method, data)
        try:
            CHECKS[method](data)
        except InvalidArgument as exc:
            assert answer == Answer(grpc.StatusCode.INVALID_ARGUMENT, str(exc)), (method, data)
        else:
            assert answer.code in SERVED[method], (method, data, answer)


@pytest.fixture
def target(settings: Settings, start_service: StartService) -> Iterator[Target]:
    def store() -> AvailabilityStore:  # one per event loop: its connections belong to it
        return AvailabilityStore.from_url(settings.redis_url, settings.redis_key_prefix)

    async def seed() -> None:
        seeding = store()
        await seeding.write_records([availability_of(SKU, stock_events())])
        await mark_serving_layer_complete(seeding, settings.partitions)
        await seeding.close()

    asyncio.run(seed())
    process = start_service("services.grpc", settings)
    channel = grpc.insecure_channel(f"127.0.0.1:{settings.grpc_port}")
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 30
    while True:
        try:
            if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                break
        except grpc.RpcError:
            pass
        assert process.running and time.monotonic() < deadline, process.tail()
        time.sleep(0.1)
    try:
        yield Target(channel, process)
        # Whatever came before, the server answers and has logged no traceback.
        assert Target(channel, process).call("GetAvailability", get(SKU)).code == (
            grpc.StatusCode.OK
        )
        assert process.running
        assert "Traceback" not in process.log_text()
    finally:
        channel.close()
        asyncio.run(forget_store(store()))


def get(sku: str) -> bytes:
    return pb.GetAvailabilityRequest(sku=sku).SerializeToString()


# --------------------------------------------------------------------------- strategies

#: Field values: valid ones, and the characters and lengths the rules refuse.
texts = st.one_of(
    st.sampled_from(["", SKU, "SKU-1", "online", "marketplace", "S1", "Online", "a b", "x" * 129]),
    st.text(max_size=40),
    st.text(alphabet="abcXYZ019._:/-", min_size=1, max_size=140),
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, Message]:
    """A request of any method with odd field values, and lists of odd lengths (one
    value repeated, so that a long list costs nothing to make)."""
    method = draw(st.sampled_from(sorted(CHECKS)))
    channel = draw(texts)
    if method in RESERVATION_METHODS:
        return method, reservation_request(draw, method, channel)
    if method == "GetAvailability":
        one = pb.GetAvailabilityRequest(sku=draw(texts), channel=channel)
        if draw(st.booleans()):
            one.location_id = draw(texts)
        return method, one
    skus = [draw(texts)] * draw(st.integers(0, 1100)) + draw(st.lists(texts, max_size=4))
    if method == "BatchGetAvailability":
        return method, pb.BatchGetAvailabilityRequest(skus=skus, channel=channel)
    locations = [draw(texts)] * draw(st.integers(0, 110))
    return method, pb.WatchAvailabilityRequest(skus=skus, channel=channel, location_ids=locations)


RESERVATION_METHODS = ("Reserve", "Release", "GetReservation", "ExtendReservation")
seconds = st.integers(-5, 20_000)


def reservation_request(draw: st.DrawFn, method: str, channel: str) -> Message:
    rid = draw(texts)
    if method == "Release":
        return pb.ReleaseRequest(reservation_id=rid)
    if method == "GetReservation":
        return pb.GetReservationRequest(reservation_id=rid)
    if method == "ExtendReservation":
        return pb.ExtendReservationRequest(reservation_id=rid, expires_in_s=draw(seconds))
    one = pb.ReservationLine(sku=draw(texts), quantity=draw(st.integers(-2, 2_000_000_000)))
    if draw(st.booleans()):
        one.location_id = draw(texts)
    lines = [one] * draw(st.integers(0, 105))
    for _ in range(draw(st.integers(0, 3))):
        lines.append(pb.ReservationLine(sku=draw(texts), quantity=draw(st.integers(0, 3))))
    return pb.ReserveRequest(
        reservation_id=rid, channel=channel, expires_in_s=draw(seconds), lines=lines
    )


@st.composite
def damaged(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid request's bytes, then cut, with bytes flipped, or with bytes added."""
    method, request = draw(requests())
    data = bytearray(request.SerializeToString())
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["cut", "flip", "add"]))
        if how == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)) :]
        elif how == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        else:
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return method, bytes(data)


# --------------------------------------------------------------------------- the tests


@fuzz
@given(data=st.binary(max_size=400), method=st.sampled_from(sorted(CHECKS)))
def test_bytes_to_every_rpc(target: Target, data: bytes, method: str) -> None:
    target.check(method, data)
    refused = target.call(method, data, metadata=None)
    assert refused.code == grpc.StatusCode.UNAUTHENTICATED


@fuzz
@given(case=requests())
def test_field_values_and_counts(target: Target, case: tuple[str, Message]) -> None:
    method, request = case
    target.check(method, request.SerializeToString())


@fuzz
@given(case=damaged())
def test_damaged_requests(target: Target, case: tuple[str, bytes]) -> None:
    target.check(*case)


def test_wire_level_oddities(target: Target) -> None:
    cases = {
        "a string field sent as a number": b"\x08\x01",
        "a string that is not UTF-8": b"\x0a\x02\xc3\x28",
        "a length beyond the end": b"\x0a\x7f" + b"A" * 10,
        "a varint that never ends": b"\x10" + b"\xff" * 11,
        "groups opened and never closed": b"\x0b" * 200,
        "a field number 0": b"\x00\x00",
        "an unknown field beside a valid one": get(SKU) + b"\xa0\x06\x01",
        "nothing": b"",
    }
    for method in CHECKS:
        for name, data in cases.items():
            try:
                target.check(method, data)
            except AssertionError as exc:
                raise AssertionError(f"{method}, {name}: {exc}") from None
    # Three of them are what they look like.
    assert target.call("GetAvailability", b"\x0a\x02\xc3\x28").details == (
        "the request is not a valid availability.v1.GetAvailabilityRequest message"
    )
    assert target.call("GetAvailability", get(SKU) + b"\xa0\x06\x01").code == grpc.StatusCode.OK
    assert target.call("BatchGetAvailability", b"").code == grpc.StatusCode.OK  # no SKUs


def test_oversized_requests(target: Target) -> None:
    million = pb.WatchAvailabilityRequest(skus=["S"] * 1_000_000).SerializeToString()
    junk = b"\x0a\x03abc" * (MAX_RECEIVE // 5 + 1)
    for method in CHECKS:
        for data in (million, junk):
            assert len(data) > MAX_RECEIVE
            answer = target.call(method, data)
            assert answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED, (method, answer)
            assert "larger than max" in answer.details
            # No credential: that is said first, whatever the size.
            assert target.call(method, data, metadata=None).code == (
                grpc.StatusCode.UNAUTHENTICATED
            )
    # Below the receive limit, the counts are checked before any item, and quickly.
    under = 300_000  # 900 KB of one-character SKUs, none of them looked at
    cases = {
        "WatchAvailability": (
            pb.WatchAvailabilityRequest(skus=["?"] * under),
            f"skus lists {under} SKUs; at most 1000 allowed (500 distinct)",
        ),
        "BatchGetAvailability": (
            pb.BatchGetAvailabilityRequest(skus=["?"] * under),
            f"skus holds {under} SKUs; at most 500 allowed",
        ),
    }
    for method, (request, message) in cases.items():
        started = time.monotonic()
        answer = target.call(method, request.SerializeToString())
        assert answer == Answer(grpc.StatusCode.INVALID_ARGUMENT, message)
        assert time.monotonic() - started < 2
    locations = pb.WatchAvailabilityRequest(skus=["A"], location_ids=["?"] * under)
    answer = target.call("WatchAvailability", locations.SerializeToString())
    assert answer == Answer(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"location_ids lists {under} locations; at most 100 allowed",
    )
