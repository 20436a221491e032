"""``WatchAvailability`` against a real ``python -m services.grpc`` process.

Changes are made the way the stream processor makes them, through
``AvailabilityStore.write_records`` (the write script that bumps the version and
announces the change); ``test_stream_processor`` covers the whole path from a Kafka
event to a watch.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import grpc

from availability.ats import LocationAvailability, SkuAvailability
from infra.config import Settings
from infra.store import AvailabilityStore
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from services.grpc.gen.availability.v1 import availability_pb2_grpc as pb_grpc
from services.grpc.messages import availability_dict
from tests.integration.conftest import StartService
from tests.integration.grpc_support import (
    AUTH,
    SKU,
    Apis,
    Stream,
    availability_of,
    stock_events,
    watch,
)
from tests.integration.grpc_support import wait_serving as wait_grpc_serving
from tests.integration.scenario import at_minute


def stock(sku: str, **on_hand: int) -> SkuAvailability:
    """A record with these on-hand figures per location (nothing else)."""
    return SkuAvailability(
        sku,
        tuple(
            LocationAvailability(loc, qty, 0, 0, 0, 0, {}) for loc, qty in sorted(on_hand.items())
        ),
        None,
    )


async def subscribers(store: AvailabilityStore, sku: str) -> int:
    channel = store.change_channel(sku)
    answer = await store.client.execute_command("PUBSUB", "SHARDNUMSUB", channel)
    return int(answer[1])


async def wait_subscribers(store: AvailabilityStore, sku: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while (now := await subscribers(store, sku)) != count:
        assert time.monotonic() < deadline, f"{now} subscribers of {sku}, expected {count}"
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- figures


async def test_initial_figures_then_every_change(apis: Apis) -> None:
    stub, store = apis.stub, apis.store
    async with watch(stub, [SKU, "NEW-1", SKU], "marketplace") as call:
        initial = await call.read_initial(2)  # SKU listed twice: watched once
        get = await stub.GetAvailability(
            pb.GetAvailabilityRequest(sku=SKU, channel="marketplace"), metadata=AUTH
        )
        assert initial[SKU].availability == get
        assert initial[SKU].version > 0
        assert availability_dict(initial["NEW-1"].availability) == {
            "sku": "NEW-1", "channel": "marketplace", "ats": 0, "locations": [],
        }  # fmt: skip
        assert initial["NEW-1"].version == 0

        sale = {"type": "pos.sale", "event_id": "w1", "location_id": "S1", "quantity": 1,
                "occurred_at": at_minute(10)}  # fmt: skip
        changed = availability_of(SKU, [*stock_events(), sale])
        [version] = await store.write_records([changed])
        message = await call.read()
        assert not message.initial
        assert message.version == version == initial[SKU].version + 1
        get = await stub.GetAvailability(
            pb.GetAvailabilityRequest(sku=SKU, channel="marketplace"), metadata=AUTH
        )
        assert message.availability == get
        # A rewrite with the same figures is no change (the version stays; nobody
        # marked it published, so the write answers the version the feed still needs).
        assert await store.write_records([changed]) == [version]
        await call.nothing_within(0.5)

        [first] = await store.write_records([stock("NEW-1", S1=4)])
        message = await call.read()
        assert (message.availability.sku, message.version, message.availability.ats) == (
            "NEW-1", first, 4,
        )  # fmt: skip


async def test_location_filter_shows_only_changes_it_sees(apis: Apis) -> None:
    store = apis.store
    await store.write_records([stock("LOC-1", S1=5, S2=7)])
    async with watch(apis.stub, ["LOC-1"], location_ids=["S2", "S9"]) as call:
        first = (await call.read_initial(1))["LOC-1"]
        assert [loc.location_id for loc in first.availability.locations] == ["S2"]
        assert first.availability.ats == 7
        await store.write_records([stock("LOC-1", S1=4, S2=7)])  # S1 only: not shown
        await call.nothing_within(0.5)
        [version] = await store.write_records([stock("LOC-1", S1=4, S2=6, S9=1)])
        message = await call.read()
        assert message.version == version == first.version + 2  # the gap: the S1 change
        assert [(loc.location_id, loc.on_hand) for loc in message.availability.locations] == [
            ("S2", 6), ("S9", 1),
        ]  # fmt: skip
        assert message.availability.ats == 7


async def test_invalid_arguments(apis: Apis) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"skus": []}, "at least one"),
        ({"skus": ["ok", "bad sku"]}, "skus[1]"),
        ({"skus": [f"S{i}" for i in range(501)]}, "at most 500"),
        ({"skus": ["ok"], "channel": "Bad"}, "channel"),
        ({"skus": ["ok"], "location_ids": ["S1", ""]}, "location_ids[1]"),
    ]
    for fields, named in cases:
        call = Stream(
            apis.stub.WatchAvailability(pb.WatchAvailabilityRequest(**fields), metadata=AUTH)
        )
        code, message = await call.status()
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (fields, code, message)
        assert named in message, (named, message)
    # 500 distinct SKUs, or more listed with duplicates, is allowed.
    skus = [f"S{i}" for i in range(500)] * 2
    async with watch(apis.stub, skus) as call:
        assert len(await call.read_initial(500)) == 500


# --------------------------------------------------------------------------- resources


async def test_200_concurrent_watches(apis: Apis) -> None:
    stub, store = apis.stub, apis.store
    skus = [f"MANY-{i}" for i in range(50)]
    await store.write_records([stock(sku, S1=10) for sku in skus])
    calls = [watch(stub, skus[i % 50 : i % 50 + 5]) for i in range(200)]
    try:
        initial = await asyncio.gather(*(call.read_initial(len(skus[i % 50 : i % 50 + 5]))
                                         for i, call in enumerate(calls)))  # fmt: skip
        assert all(m.availability.ats == 10 for answer in initial for m in answer.values())
        await wait_subscribers(store, "MANY-0", 1)  # one subscription per SKU, not per watch
        # Reads go on while 200 watches are open.
        started = time.monotonic()
        for sku in skus:
            get = await stub.GetAvailability(
                pb.GetAvailabilityRequest(sku=sku), timeout=5, metadata=AUTH
            )
            assert get.ats == 10
        assert time.monotonic() - started < 10
        versions = dict(zip(skus, await store.write_records([stock(s, S1=9) for s in skus]),
                            strict=True))  # fmt: skip
        changes = await asyncio.gather(*(call.read() for call in calls))
        for i, message in enumerate(changes):
            sku = message.availability.sku
            assert sku in skus[i % 50 : i % 50 + 5]
            assert (message.version, message.availability.ats) == (versions[sku], 9)
    finally:
        for call in calls:
            call.cancel()


async def test_slow_watcher_gets_the_latest_figures(apis: Apis) -> None:
    """A client that stops reading: the server coalesces instead of queueing."""
    store = apis.store
    skus = [f"SLOW-{i}" for i in range(20)]
    await store.write_records([stock(sku, S1=0) for sku in skus])
    # Read directly, not through a Stream (whose task reads all the time).
    request = pb.WatchAvailabilityRequest(skus=skus)
    call = apis.stub.WatchAvailability(request, metadata=AUTH)
    try:
        for _ in skus:
            assert (await asyncio.wait_for(call.read(), 10)).initial
        rounds = 2000
        for n in range(1, rounds + 1):
            last = await store.write_records([stock(sku, S1=n) for sku in skus])
        # Now read: each SKU's figures arrive at their latest, in far fewer messages
        # than the 40,000 changes made: those that fitted in HTTP/2's flow-control
        # window while the client did not read (about 11,000 here, 1.8 MB), then
        # the coalesced latest ones.
        latest = dict(zip(skus, last, strict=True))
        seen: dict[str, int] = {}
        messages = 0
        while seen != latest:
            message = await asyncio.wait_for(call.read(), 10)
            messages += 1
            sku = message.availability.sku
            assert message.version > seen.get(sku, 0)
            seen[sku] = message.version
            if message.version == latest[sku]:
                assert message.availability.ats == rounds
        assert messages < rounds * len(skus) / 2, messages
    finally:
        call.cancel()


async def test_cancel_and_deadline_release_subscriptions(apis: Apis) -> None:
    stub, store = apis.stub, apis.store
    call = watch(stub, ["GONE-1", "GONE-2"])
    await call.read_initial(2)
    await wait_subscribers(store, "GONE-1", 1)
    call.cancel()
    await wait_subscribers(store, "GONE-1", 0)
    await wait_subscribers(store, "GONE-2", 0)

    timed = watch(stub, ["GONE-3"], timeout=1.0)
    await timed.read_initial(1)
    await wait_subscribers(store, "GONE-3", 1)
    code, _ = await timed.status()
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_subscribers(store, "GONE-3", 0)


async def test_watch_limit(settings: Settings, start_service: StartService) -> None:
    limited = settings.model_copy(update={"grpc_max_watches": 2})
    process = start_service("services.grpc", limited)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{limited.grpc_port}") as channel:
        await wait_grpc_serving(channel, process)
        stub = pb_grpc.AvailabilityServiceStub(channel)
        first, second = watch(stub, ["L-1"]), watch(stub, ["L-2"])
        await first.read_initial(1)
        await second.read_initial(1)
        code, message = await watch(stub, ["L-3"]).status()
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "2 watches" in message
        first.cancel()
        deadline = time.monotonic() + 10
        while True:  # the slot comes back once the server has cleaned up
            third = watch(stub, ["L-3"])
            try:
                await third.read_initial(1)
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        third.cancel()
        second.cancel()


# --------------------------------------------------------------------------- endings


async def test_lost_store_connection_ends_watches_unavailable(apis: Apis) -> None:
    store = apis.store
    call = watch(apis.stub, ["KILL-1"])
    await call.read_initial(1)
    await wait_subscribers(store, "KILL-1", 1)
    # Changes published while the subscription is away would be lost: the watch ends.
    await store.client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    code, message = await call.status()
    assert code == grpc.StatusCode.UNAVAILABLE and "reconnect" in message
    # A new watch subscribes again and gets changes.
    async with watch(apis.stub, ["KILL-1"]) as again:
        await again.read_initial(1)
        [version] = await store.write_records([stock("KILL-1", S1=1)])
        assert (await again.read()).version == version


async def test_shutdown_ends_watches_unavailable_at_once(apis: Apis) -> None:
    call = watch(apis.stub, [SKU])
    await call.read_initial(1)
    started = time.monotonic()
    apis.grpc_process.kill(signal.SIGTERM)
    code, message = await call.status()
    assert code == grpc.StatusCode.UNAVAILABLE and "shutting down" in message
    assert time.monotonic() - started < 4  # not the 5 s grace period
    assert apis.grpc_process.wait(15) == 0
