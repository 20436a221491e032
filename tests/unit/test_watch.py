"""``Watch``: what a WatchAvailability stream sends, given the changes offered to it;
``WatchHub``: its limits, with a stand-in for the Redis subscription."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from availability.ats import LocationAvailability, SkuAvailability
from availability.watch_thresholds import Thresholds, figures_of
from infra.serving_reads import FoldedRecord
from infra.store import AvailabilityStore
from services.auth.identity import Identity
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from services.grpc.messages import InvalidArgument, parse_watch
from services.grpc.watch import (
    ChangeSubscription,
    TooManyWatches,
    Update,
    Watch,
    WatchClosed,
    WatchHub,
)


def stock(sku: str, **on_hand: int) -> SkuAvailability:
    locations = tuple(
        LocationAvailability(loc, qty, 0, 0, 0, 0, {}) for loc, qty in sorted(on_hand.items())
    )
    return SkuAvailability(sku, locations, None)


class Reader:
    """Reads a watch's updates in a task, as the gRPC handler does.

    Cancelling a pending ``anext`` would close the generator, so "nothing to send"
    is asked of the queue.
    """

    def __init__(self, watch: Watch) -> None:
        self.queue: asyncio.Queue[Update | BaseException] = asyncio.Queue()
        self._task = asyncio.create_task(self._pump(watch.updates()))

    async def _pump(self, updates: AsyncIterator[Update]) -> None:
        try:
            async for update in updates:
                self.queue.put_nowait(update)
        except WatchClosed as exc:
            self.queue.put_nowait(exc)

    async def take(self, count: int) -> list[Update]:
        taken = []
        for _ in range(count):
            item = await asyncio.wait_for(self.queue.get(), 1)
            if isinstance(item, BaseException):
                raise item
            taken.append(item)
        return taken

    async def nothing_ready(self) -> bool:
        await settle()
        return self.queue.empty()

    async def all_ready(self) -> list[Update]:
        await settle()
        return [item for item in drain(self.queue) if isinstance(item, Update)]


async def settle() -> None:
    """Let the reader task run until it waits for new offers."""
    for _ in range(10):
        await asyncio.sleep(0)


def drain(queue: asyncio.Queue[Update | BaseException]) -> list[Update | BaseException]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def test_initial_figures_then_changes() -> None:
    watch = Watch(["A", "B", "A"], "online", None)
    assert watch.skus == ["A", "B"]
    watch.start([(7, stock("A", S1=3)), (0, None)])
    updates = Reader(watch)
    first, second = await updates.take(2)
    assert (first.sku, first.version, first.initial, first.answer["ats"]) == ("A", 7, True, 3)
    assert second.answer == {"sku": "B", "channel": "online", "ats": 0, "locations": []}
    assert second.version == 0
    watch.offer("B", 1, stock("B", S1=2))
    [change] = await updates.take(1)
    assert (change.sku, change.version, change.initial, change.answer["ats"]) == ("B", 1, False, 2)


async def test_changes_older_than_the_initial_read_are_dropped() -> None:
    watch = Watch(["A"], "online", None)
    # Subscribed before the initial read: this change is already in what was read.
    watch.offer("A", 7, stock("A", S1=3))
    watch.start([(7, stock("A", S1=3))])
    updates = Reader(watch)
    [initial] = await updates.take(1)
    assert initial.version == 7
    assert await updates.nothing_ready()
    watch.offer("A", 6, stock("A", S1=9))  # a stale duplicate
    assert await updates.nothing_ready()


async def test_a_slow_reader_gets_the_latest_figures_only() -> None:
    watch = Watch(["A", "B"], "online", None)
    watch.start([(1, stock("A", S1=0)), (1, stock("B", S1=0))])
    updates = Reader(watch)
    await updates.take(2)
    for version in range(2, 100):
        watch.offer("A", version, stock("A", S1=version))
    watch.offer("B", 5, stock("B", S1=5))
    got = await updates.take(2)
    assert {(u.sku, u.version, u.answer["ats"]) for u in got} == {("A", 99, 99), ("B", 5, 5)}
    assert watch.coalesced == 97
    assert await updates.nothing_ready()


async def test_location_filter_sends_only_what_it_shows() -> None:
    watch = Watch(["A"], "pos", ["S2"])
    watch.start([(1, stock("A", S1=1, S2=2))])
    updates = Reader(watch)
    [initial] = await updates.take(1)
    assert [loc["location_id"] for loc in initial.answer["locations"]] == ["S2"]
    watch.offer("A", 2, stock("A", S1=5, S2=2))
    assert await updates.nothing_ready()
    watch.offer("A", 3, stock("A", S1=5, S2=4))
    [change] = await updates.take(1)
    assert (change.version, change.answer["ats"], change.answer["channel"]) == (3, 4, "pos")


async def test_low_stock_sends_the_crossing_and_what_follows_below_the_level() -> None:
    watch = Watch(["A"], "online", ["S1"], thresholds=Thresholds(low_stock=2))
    watch.start([(1, stock("A", S1=5, S2=0))])
    updates = Reader(watch)
    [initial] = await updates.take(1)  # always sent, whatever the level
    assert initial.answer["ats"] == 5
    sent = []
    for version, left in enumerate([4, 3, 2, 1, 0, 6, 7], start=2):
        watch.offer("A", version, stock("A", S1=left, S2=version))
        sent += await updates.all_ready()
    assert [(u.version, u.answer["ats"]) for u in sent] == [(4, 2), (5, 1), (6, 0), (7, 6)]
    assert all(not u.initial for u in sent)
    assert watch.held_back == 3  # 4, 3 and 7: above the level (S2 is not watched)
    watch.offer("A", 5, stock("A", S1=0))  # an old version arriving late is dropped
    assert await updates.nothing_ready()


async def test_min_delta_compares_with_the_last_figures_sent() -> None:
    watch = Watch(["A"], "online", None, thresholds=Thresholds(min_delta=3))
    watch.start([(1, stock("A", S1=10, S2=10))])
    updates = Reader(watch)
    await updates.take(1)
    sent = []
    for version, (s1, s2) in enumerate([(9, 10), (8, 11), (7, 12), (7, 13)], start=2):
        watch.offer("A", version, stock("A", S1=s1, S2=s2))
        sent += await updates.all_ready()
    # 10 -> 9 -> 8: small moves held back; 7 is 3 below the 10 last sent.
    assert [(u.version, figures_of(u.answer)) for u in sent] == [(4, {"S1": 7, "S2": 12})]
    # Other figures changing without an ats move send nothing under thresholds.
    watch.offer("A", 6, SkuAvailability("A", (LocationAvailability("S1", 9, 2, 0, 0, 0, {}),
                                              LocationAvailability("S2", 13, 1, 0, 0, 0, {})),
                                        None))  # fmt: skip
    assert await updates.nothing_ready()


async def test_closing_ends_the_updates() -> None:
    watch = Watch(["A"], "online", None)
    updates = Reader(watch)  # waiting for the initial read
    await settle()
    watch.close("the server is shutting down; reconnect")
    with pytest.raises(WatchClosed, match="shutting down"):
        await updates.take(1)

    started = Watch(["A"], "online", None)
    started.start([(1, stock("A", S1=1))])
    updates = Reader(started)
    await updates.take(1)
    await settle()
    started.offer("A", 2, stock("A", S1=2))
    started.close("gone")  # before the reader took the change: it is not sent
    with pytest.raises(WatchClosed, match="gone"):
        await updates.take(1)


@settings(max_examples=60, deadline=None)
@given(
    offers=st.lists(
        st.tuples(st.sampled_from(["A", "B", "C"]), st.integers(0, 5), st.booleans()),
        max_size=60,
    )
)
def test_versions_increase_and_the_last_figures_arrive(
    offers: list[tuple[str, int, bool]],
) -> None:
    """Offers (a SKU's next version with new figures), with reads in between at random:
    each SKU's versions strictly increase, and its last figures are always sent."""

    async def run() -> None:
        watch = Watch(["A", "B", "C"], "online", None)
        version = dict.fromkeys("ABC", 1)
        figures = dict.fromkeys("ABC", 0)
        watch.start([(1, stock(sku, S1=0)) for sku in "ABC"])
        updates = Reader(watch)
        shown = {u.sku: u for u in await updates.take(3)}

        def check(received: list[Update]) -> None:
            for update in received:
                assert update.version > shown[update.sku].version
                assert update.answer != shown[update.sku].answer
                shown[update.sku] = update

        for sku, qty, read_now in offers:
            version[sku] += 1
            figures[sku] = qty
            watch.offer(sku, version[sku], stock(sku, S1=qty))
            if read_now:
                check(await updates.all_ready())
        check(await updates.all_ready())
        for sku in "ABC":
            assert shown[sku].answer["ats"] == figures[sku]

    asyncio.run(run())


def test_parse_watch() -> None:
    request = pb.WatchAvailabilityRequest(skus=["A", "B", "A"], location_ids=["S1"])
    assert parse_watch(request) == (["A", "B"], "online", ["S1"], Thresholds())
    assert parse_watch(pb.WatchAvailabilityRequest(skus=["A"], channel="pos")) == (
        ["A"], "pos", None, Thresholds(),
    )  # fmt: skip
    with_thresholds = pb.WatchAvailabilityRequest(skus=["A"], low_stock=0, min_delta=5)
    assert parse_watch(with_thresholds)[3] == Thresholds(low_stock=0, min_delta=5)
    assert len(parse_watch(pb.WatchAvailabilityRequest(skus=["A"] * 900))[0]) == 1
    bad = [
        (pb.WatchAvailabilityRequest(), "at least one"),
        (pb.WatchAvailabilityRequest(skus=[f"S{i}" for i in range(501)]), "at most 500"),
        (pb.WatchAvailabilityRequest(skus=["A", "no good"]), "skus[1]"),
        (pb.WatchAvailabilityRequest(skus=["A"], channel="POS"), "channel"),
        (pb.WatchAvailabilityRequest(skus=["A"], location_ids=["S1", "x y"]), "location_ids[1]"),
        (pb.WatchAvailabilityRequest(skus=["A"], low_stock=-1), "low_stock must be at least 0"),
        (pb.WatchAvailabilityRequest(skus=["A"], min_delta=0), "min_delta must be at least 1"),
        (pb.WatchAvailabilityRequest(skus=["A"], min_delta=-3), "min_delta"),
    ]
    for request, named in bad:
        with pytest.raises(InvalidArgument, match=named.replace("[", r"\[")):
            parse_watch(request)


# --------------------------------------------------------------------------- the hub's limits


class FakeStore:
    """What a hub asks of the store while opening a watch (a single Redis: ``client``
    is no cluster client)."""

    client = None

    def change_channel(self, sku: str) -> bytes:
        return f"changes:{{{sku}}}".encode()

    async def read_folded(self, skus: list[str]) -> list[FoldedRecord]:
        return [FoldedRecord(0, None, {})] * len(skus)


class FakeSubscription:
    """A pub/sub connection that confirms subscriptions, or (``stuck``) never does."""

    def __init__(self, stuck: bool) -> None:
        self.stuck = stuck
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def ssubscribe(self, *channels: bytes) -> None:
        if not self.stuck:
            for channel in channels:
                self.messages.put_nowait({"type": "ssubscribe", "channel": channel})

    async def sunsubscribe(self, *channels: bytes) -> None:
        pass

    async def get_message(self, timeout: float) -> dict[str, Any] | None:
        try:
            return await asyncio.wait_for(self.messages.get(), timeout)
        except TimeoutError:
            return None

    async def aclose(self) -> None:
        pass


class Hub(WatchHub):
    def __init__(self, *, stuck: bool = False, **limits: Any) -> None:
        super().__init__(cast(AvailabilityStore, FakeStore()), **limits)
        self.subscription = FakeSubscription(stuck)

    def _new_pubsub(self, node: str) -> ChangeSubscription:
        return cast(ChangeSubscription, self.subscription)


ALICE = Identity("alice", frozenset({"availability:watch"}), "api_key")


async def test_each_credential_has_its_own_watch_quota() -> None:
    hub = Hub(max_watches=5, max_per_identity=2)
    bob = Identity("bob", ALICE.scopes, "jwt")
    alice_jwt = Identity("alice", ALICE.scopes, "jwt")  # another credential, same name
    try:
        first = await hub.open(["A"], "online", None, ALICE)
        await hub.open(["B"], "online", None, ALICE)
        with pytest.raises(TooManyWatches, match="'alice' holds its quota of 2 watches"):
            await hub.open(["C"], "online", None, ALICE)
        await hub.open(["C"], "online", None, bob)
        await hub.open(["C"], "online", None, alice_jwt)
        assert (hub.open_by(ALICE), hub.open_by(bob), hub.open_count) == (2, 1, 4)
        await hub.release(first)
        await hub.open(["C"], "online", None, ALICE)  # the slot is back at once
        await hub.open(["D"], "online", None)  # no owner: only the server's limit
        with pytest.raises(TooManyWatches, match="this server holds its maximum of 5"):
            await hub.open(["E"], "online", None, bob)
    finally:
        await hub.close("test over")


async def test_an_unconfirmed_subscription_ends_the_watch_in_time() -> None:
    hub = Hub(stuck=True, max_watches=5, max_per_identity=2, subscribe_timeout=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(WatchClosed, match=r"did not confirm the subscription within 0.2 s"):
            await hub.open(["A", "B"], "online", None, ALICE)
        assert time.monotonic() - started < 2
        # Nothing is held: neither the server's slot nor the credential's.
        assert (hub.open_count, hub.open_by(ALICE)) == (0, 0)
    finally:
        await hub.close("test over")
