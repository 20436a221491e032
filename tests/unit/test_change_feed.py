"""``ChangeFeed``: the outbox that publishes serving-record changes in order.

The broker and Redis are fakes here (``integration/test_stream_processor`` runs the
real ones): ``FakeBroker.send_all`` acknowledges or refuses, ``FakeStore`` remembers
what was marked published.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, cast

import orjson

from availability.ats import LocationAvailability
from infra.store import AvailabilityStore
from streams.change_feed import ChangeFeed, location_record

CLOCK = 1_795_420_800_123_456  # µs: 2026-11-23T08:00:00.123456Z


def at(location: str, on_hand: int, buffers: dict[str, int] | None = None) -> LocationAvailability:
    return LocationAvailability(location, on_hand, 2, 1, 0, 3, buffers or {})


def stock(
    sku: str, on_hand: int, version: int, buffers: dict[str, int] | None = None
) -> tuple[str, int, list[LocationAvailability | str]]:
    """A change of one location (S1) of ``sku``."""
    return sku, version, [at("S1", on_hand, buffers)]


class FakeStore:
    def __init__(self) -> None:
        self.marked: list[tuple[str, int]] = []

    async def mark_published(self, versions: Iterable[tuple[str, int]]) -> None:
        self.marked.extend(versions)


class FakeBroker:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, dict[str, Any]]] = []
        self.refuse = 0  # refuse this many sends

    async def send_all(self, records: Sequence[tuple[str, bytes, bytes]]) -> list[Awaitable[None]]:
        acks = []
        for _, key, value in records:
            ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if self.refuse:
                self.refuse -= 1
                ack.set_exception(ConnectionError("broker away"))
            else:
                self.records.append((key, orjson.loads(value)))
                ack.set_result(None)
            acks.append(ack)
        return acks


def feed_with(
    broker: FakeBroker, store: FakeStore, owned: set[str] | None = None, max_pending: int = 100
) -> ChangeFeed:
    return ChangeFeed(
        cast(AvailabilityStore, store),
        broker.send_all,
        owns=lambda sku: owned is None or sku in owned,
        clock=lambda: CLOCK,
        max_pending=max_pending,
    )


async def run_until_drained(feed: ChangeFeed) -> None:
    task = asyncio.create_task(feed.run())
    try:
        assert await feed.drain(timeout=5)
    finally:
        task.cancel()


def test_location_record_format() -> None:
    record = orjson.loads(location_record("A", at("S1", 10, {"pos": 2}), 7, CLOCK))
    assert record == {
        "sku": "A", "location_id": "S1", "version": 7,
        "computed_at": "2026-11-23T08:00:00.123456Z",
        "on_hand": 10, "reserved": 2, "in_transit": 1, "damaged": 0, "safety_stock": 3,
        "buffers": {"pos": 2},
        "ats": 5,  # 10 on hand - 2 reserved - 3 safety stock; no buffer
    }  # fmt: skip


def test_a_location_gone_is_published_with_nothing() -> None:
    record = orjson.loads(location_record("A", "S9", 8, CLOCK))
    assert record == {
        "sku": "A", "location_id": "S9", "version": 8,
        "computed_at": "2026-11-23T08:00:00.123456Z",
        "on_hand": 0, "reserved": 0, "in_transit": 0, "damaged": 0, "safety_stock": 0,
        "buffers": {}, "ats": 0,
    }  # fmt: skip


async def test_one_record_per_location_keyed_by_sku_and_location() -> None:
    broker, store = FakeBroker(), FakeStore()
    feed = feed_with(broker, store)
    feed.add([("A", 5, [at("S2", 4), at("S1", 9), "S3"])])
    await run_until_drained(feed)
    assert [(key, r["version"], r["on_hand"]) for key, r in broker.records] == [
        (b"A S2", 5, 4), (b"A S1", 5, 9), (b"A S3", 5, 0),
    ]  # fmt: skip
    assert store.marked == [("A", 5)]
    assert feed.published == 3


async def test_publishes_in_order_then_marks() -> None:
    broker, store = FakeBroker(), FakeStore()
    feed = feed_with(broker, store)
    feed.add([stock("A", 1, 1), stock("B", 1, 1)])
    feed.add([stock("A", 2, 2)])
    feed.add([stock("A", 2, 2)])  # the same version again while queued: once
    await run_until_drained(feed)
    assert [(key, r["version"], r["on_hand"]) for key, r in broker.records] == [
        (b"A S1", 1, 1), (b"B S1", 1, 1), (b"A S1", 2, 2),
    ]  # fmt: skip
    assert store.marked == [("A", 1), ("B", 1), ("A", 2)]
    assert (feed.published, feed.pending) == (3, 0)


async def test_a_refused_batch_is_sent_again_in_order(monkeypatch: Any) -> None:
    monkeypatch.setattr("streams.change_feed.RETRY_DELAY", 0.01)
    broker, store = FakeBroker(), FakeStore()
    broker.refuse = 1
    feed = feed_with(broker, store)
    feed.add([stock("A", n, n) for n in range(1, 4)])
    await run_until_drained(feed)
    # The batch goes again whole: what was acknowledged before may come twice, in order.
    versions = [r["version"] for _, r in broker.records]
    assert versions[-3:] == [1, 2, 3] and sorted(set(versions)) == [1, 2, 3]
    assert feed.errors == 1
    assert store.marked == [("A", 1), ("A", 2), ("A", 3)]


async def test_skus_no_longer_owned_are_left_to_their_new_owner() -> None:
    broker, store = FakeBroker(), FakeStore()
    feed = feed_with(broker, store, owned={"A"})
    feed.add([stock("A", 1, 1), stock("B", 1, 1)])
    await run_until_drained(feed)
    assert [key for key, _ in broker.records] == [b"A S1"]
    assert store.marked == [("A", 1)]  # B stays unmarked: its owner publishes it


async def test_a_full_outbox_holds_writers_back() -> None:
    broker, store = FakeBroker(), FakeStore()
    feed = feed_with(broker, store, max_pending=3)
    feed.add([stock(f"S{n}", 1, 1) for n in range(3)])
    waiting = asyncio.create_task(feed.wait_room())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await run_until_drained(feed)
    await asyncio.wait_for(waiting, 1)
    assert len(broker.records) == 3


async def test_another_location_at_a_version_queued_still_goes() -> None:
    """The hold sweep republishes a line's location at the version the worker's own
    write of another location queued: both go, each location once."""
    broker, store = FakeBroker(), FakeStore()
    feed = feed_with(broker, store)
    feed.add([("A", 4, [at("S1", 1)])])
    feed.add([("A", 4, [at("S1", 1), at("S2", 2)])])
    feed.add([("A", 3, [at("S3", 3)])])  # older than what is queued: dropped
    await run_until_drained(feed)
    assert [(key, r["version"]) for key, r in broker.records] == [(b"A S1", 4), (b"A S2", 4)]
    assert store.marked == [("A", 4), ("A", 4)]
