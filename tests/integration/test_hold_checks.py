"""The worker's second look at reservation lines (infra.hold_checks, streams.hold_sweep)
against real Redis: versions, announcements and the feed's records of holds placed,
removed, lapsed and handed over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import orjson

from availability.ats import LocationAvailability, SkuAvailability
from infra.hold_checks import HoldChecks
from infra.records import decode_change, encode_whole
from infra.reservation_store import ReservationStore
from infra.store import AvailabilityStore
from streams.change_feed import ChangeFeed
from streams.hold_sweep import HoldSweep

PARTITIONS = 4


def record(sku: str, on_hand: int, reserved: int = 0) -> SkuAvailability:
    return SkuAvailability(sku, (LocationAvailability("S1", on_hand, reserved, 0, 0, 0, {}),), None)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Sent:
    """The feed's broker: what was sent, acknowledged at once."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def __call__(
        self, records: Sequence[tuple[str, bytes, bytes]]
    ) -> list[asyncio.Future[None]]:
        self.records += [orjson.loads(value) for _, _, value in records]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return [done]


def reserved(figures: SkuAvailability) -> int:
    [location] = figures.locations
    return location.reserved


async def test_a_lapsed_hold_is_announced_and_fed_and_a_handed_over_one_changes_nothing(
    store: AvailabilityStore,
) -> None:
    holds, checks = ReservationStore(store), HoldChecks(store, PARTITIONS)
    sent = Sent()
    feed = ChangeFeed(store, sent, owns=lambda sku: True, clock=lambda: time.time_ns() // 1000)
    publisher = asyncio.create_task(feed.run())
    sweep = HoldSweep(checks, feed, owned=lambda: frozenset(range(PARTITIONS)), owns=lambda s: True)
    pubsub = store.client.pubsub()
    await pubsub.ssubscribe(store.change_channel("HC-1"))
    try:
        [v0] = await store.write_records([record("HC-1", 10)])
        now = now_ms()
        # Two holds: "lapse" never handed over (short deadline), "fold" handed over.
        await checks.note([("HC-1", "lapse"), ("HC-1", "fold")], now + 300)
        lapse = await holds.place("HC-1", "lapse", "online", 2, ["S1"], now, now + 300)
        fold = await holds.place("HC-1", "fold", "online", 3, ["S1"], now, now + 60_000)
        assert lapse.change is not None and fold.change is not None
        assert (lapse.change.version, fold.change.version) == (v0 + 1, v0 + 2)
        assert reserved(fold.change.served) == 5
        assert await sweep.sweep() == 0  # nothing due yet

        # The worker folds "fold": its write hands the hold over; what the record
        # serves is unchanged (3 folded + 2 held), announced with the next version.
        [reply], counts = await store.write_encoded(
            [encode_whole(record("HC-1", 10, reserved=3))], None, {"HC-1": ["fold"]}
        )
        assert (reply.version, counts.handed_over, reply.held) == (v0 + 3, 1, {"S1": 2})

        await asyncio.sleep(0.35)
        assert await sweep.sweep() == 2
        assert sweep.expired == 1
        [(version, served)] = await store.read_versions(["HC-1"])
        assert (version, reserved(served)) == (v0 + 4, 3)
        assert await feed.drain(5)
        assert [(r["version"], r["location_id"], r["reserved"]) for r in sent.records] == [
            (v0 + 4, "S1", 3)
        ]
        # Both lines are forgotten: "lapse" is gone, "fold" was handed over.
        assert await store.client.zcard(checks.key(checks.partition_of("HC-1"))) == 0

        announced = []
        while (message := await pubsub.get_message(timeout=0.5)) is not None:
            if message["type"] == "smessage":
                change = decode_change(message["data"])
                folded = sum(loc.reserved for loc in change.changed)
                announced.append((change.version, change.whole, folded, change.held))
        assert announced == [
            (v0, True, 0, {}),
            (v0 + 1, False, 0, {"S1": 2}),
            (v0 + 2, False, 0, {"S1": 5}),
            (v0 + 3, True, 3, {"S1": 2}),
            (v0 + 4, False, 0, {}),
        ]
    finally:
        publisher.cancel()
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_a_line_noted_again_meanwhile_is_kept_and_a_live_hold_is_looked_at_later(
    store: AvailabilityStore,
) -> None:
    holds, checks = ReservationStore(store), HoldChecks(store, PARTITIONS)
    await store.write_records([record("HC-2", 5)])
    now = now_ms()
    await checks.note([("HC-2", "r1")], now - 1)
    await holds.place("HC-2", "r1", "online", 1, ["S1"], now, now + 30_000)
    [check] = await checks.due(checks.partition_of("HC-2"), now, 10)
    await checks.note([("HC-2", "r1")], now + 5_000)  # e.g. a release meanwhile
    assert not await checks.reschedule(check, None)
    key = checks.key(checks.partition_of("HC-2"))
    assert await store.client.zscore(key, "HC-2 r1") == now + 5_000
    # Due again: the hold still lives, so the line is looked at again at its deadline.
    sweep = HoldSweep(
        checks,
        None,
        owned=lambda: frozenset(range(PARTITIONS)),
        owns=lambda s: True,
        clock=lambda: now + 5_000,
    )
    assert await sweep.sweep() == 1
    assert await store.client.zscore(key, "HC-2 r1") == now + 30_000
