"""``WatchAvailability`` with thresholds, end to end: events published to Kafka, folded
by a real worker, watched through a real gRPC server. A watch without thresholds
beside them sees every change, so the threshold watches' silence is their filtering,
not a change that never came."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from infra.config import Settings
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from services.grpc.gen.availability.v1 import availability_pb2_grpc as pb_grpc
from tests.integration.conftest import StartService
from tests.integration.grpc_support import AUTH, Stream, status_of, wait_serving
from tests.integration.support import produce

SKU = "SKU-T1"
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def at(seconds: int) -> str:
    return (START + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def balance(event_id: str, location: str, on_hand: int, seconds: int) -> dict[str, Any]:
    return {"type": "erp.balance", "event_id": event_id, "sku": SKU, "location_id": location,
            "on_hand": on_hand, "as_of": at(seconds)}  # fmt: skip


def sale(event_id: str, location: str, seconds: int) -> dict[str, Any]:
    return {"type": "pos.sale", "event_id": event_id, "sku": SKU, "location_id": location,
            "quantity": 1, "occurred_at": at(seconds)}  # fmt: skip


def figures(message: pb.WatchAvailabilityResponse) -> dict[str, int]:
    return {loc.location_id: loc.ats for loc in message.availability.locations}


def watch(stub: pb_grpc.AvailabilityServiceStub, **thresholds: int) -> Stream:
    request = pb.WatchAvailabilityRequest(skus=[SKU], **thresholds)
    return Stream(stub.WatchAvailability(request, metadata=AUTH))


@pytest.fixture
async def stub(
    settings: Settings, start_service: StartService
) -> AsyncIterator[pb_grpc.AvailabilityServiceStub]:
    start_service("streams", settings, name="worker")
    server = start_service("services.grpc", settings, name="grpc")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel:
        await wait_serving(channel, server)
        yield pb_grpc.AvailabilityServiceStub(channel)


async def until_ats(stub: pb_grpc.AvailabilityServiceStub, ats: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = await stub.GetAvailability(
                pb.GetAvailabilityRequest(sku=SKU), metadata=AUTH, timeout=2
            )
            if answer.ats == ats:
                return
        except grpc.aio.AioRpcError as exc:  # not folded yet, or the layer being built
            if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                raise
        assert time.monotonic() < deadline, f"ats {ats} not served within {timeout} s"
        await asyncio.sleep(0.1)


async def test_thresholds_send_only_the_changes_they_call_for(
    settings: Settings, stub: pb_grpc.AvailabilityServiceStub
) -> None:
    topic = settings.erp_topic
    await produce(settings, topic, [balance("b1", "STORE-001", 6, 0), balance("b2", "WH-1", 20, 0)])
    await until_ats(stub, 26, timeout=90)
    async with (
        watch(stub) as every,
        watch(stub, low_stock=2) as low,
        watch(stub, min_delta=3) as delta,
    ):
        for stream in (every, low, delta):
            (initial,) = (await stream.read_initial(1)).values()
            assert figures(initial) == {"STORE-001": 6, "WH-1": 20}

        # Sold down unit by unit, each sale folded (and seen by the plain watch)
        # before the next, so nothing is coalesced: the silence below is filtering.
        moves = [("STORE-001", n) for n in range(6)] + [("WH-1", n) for n in range(3)]
        for number, (location, _) in enumerate(moves, start=1):
            await produce(settings, settings.pos_topic, [sale(f"s{number}", location, number)])
            await every.read(timeout=30)
        # Restocked by the ERP after the sales: STORE-001 at 10 again.
        await produce(settings, topic, [balance("b3", "STORE-001", 10, 100)])
        assert figures(await every.read(timeout=30)) == {"STORE-001": 10, "WH-1": 17}

        low_sent = [await low.read() for _ in range(4)]
        assert [figures(m)["STORE-001"] for m in low_sent] == [2, 1, 0, 10]
        assert [figures(m)["WH-1"] for m in low_sent] == [20, 20, 20, 17]  # complete figures
        delta_sent = [await delta.read() for _ in range(4)]
        assert [figures(m) for m in delta_sent] == [
            {"STORE-001": 3, "WH-1": 20},
            {"STORE-001": 0, "WH-1": 20},
            {"STORE-001": 0, "WH-1": 17},
            {"STORE-001": 10, "WH-1": 17},
        ]
        for sent in (low_sent, delta_sent):
            assert not any(m.initial for m in sent)
            versions = [m.version for m in sent]
            assert versions == sorted(set(versions))
        await low.nothing_within(0.5)
        await delta.nothing_within(0.1)


async def test_thresholds_are_validated(stub: pb_grpc.AvailabilityServiceStub) -> None:
    for bad, named in (({"low_stock": -1}, "low_stock"), ({"min_delta": 0}, "min_delta")):
        call = stub.WatchAvailability(pb.WatchAvailabilityRequest(skus=[SKU], **bad), metadata=AUTH)
        code, details = await status_of(call.read())
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details.startswith(f"{named} must be at least")
