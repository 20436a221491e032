"""Per-location serving records against the real Redis (README "Serving layer"): a
partial write rewrites, announces and totals only the locations it names, and every
read joins the fragments into exactly what a whole computation gives."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import orjson

from availability.ats import LocationAvailability, SkuAvailability, merge_locations
from availability.holds import with_held
from infra.hold_checks import HoldChecks
from infra.records import answer_tail, decode_change, encode_partial, encode_whole
from infra.reservation_store import ReservationStore
from infra.store import AvailabilityStore

CHANNELS = ("online", "store", "market")


def location(
    name: str, on_hand: int, safety: int = 0, buffers: dict[str, int] | None = None
) -> LocationAvailability:
    return LocationAvailability(name, on_hand, 1, 2, 0, safety, buffers or {})


def sku_of(sku: str, locations: list[LocationAvailability]) -> SkuAvailability:
    return SkuAvailability(sku, tuple(sorted(locations, key=lambda loc: loc.location_id)), None)


async def fields(store: AvailabilityStore, sku: str) -> dict[bytes, bytes]:
    return dict(await store.client.hgetall(store.sku_key(sku)))


async def assert_reads(store: AvailabilityStore, expected: SkuAvailability) -> None:
    """Every read of the record gives what the figures give computed whole."""
    for channel in (*CHANNELS, "pos"):
        assert await store.read_tail(expected.sku, channel) == answer_tail(expected, channel)
        [tail] = await store.read_tails([expected.sku], channel)
        assert tail == answer_tail(expected, channel)
    assert await store.read_availability(expected.sku) == expected
    [record] = await store.read_folded([expected.sku])
    assert (record.folded, record.held) == (expected, {})


async def test_partial_writes_keep_the_totals_of_every_channel(store: AvailabilityStore) -> None:
    rng = random.Random(7)
    names = [f"S{n:03d}" for n in range(40)]

    def random_location(name: str) -> LocationAvailability:
        buffers = {c: rng.randint(0, 4) for c in CHANNELS[:2] if rng.random() < 0.5}
        return location(name, rng.randint(-3, 30), rng.randint(0, 3), buffers)

    current = {name: random_location(name) for name in names}
    # "online" and "store" buffered somewhere from the start: the record's channels.
    current["S000"] = location("S000", 10, 0, {"online": 1, "store": 2})
    assert (await store.write_records([sku_of("P", list(current.values()))], 100)) == [100]
    await assert_reads(store, sku_of("P", list(current.values())))
    version = 100
    for _ in range(30):
        changed = [random_location(name) for name in rng.sample(names[1:], 3)]
        [reply], _ = await store.write_encoded([encode_partial("P", changed)])
        version += 1
        assert (reply.version, reply.need_full) == (version, False)
        current.update({loc.location_id: loc for loc in changed})
    expected = sku_of("P", list(current.values()))
    await assert_reads(store, expected)
    stored = await fields(store, "P")
    for channel in ("online", "store"):
        assert int(stored[b"t:" + channel.encode()]) == sum(
            loc.ats(channel) for loc in expected.locations
        )
    assert int(stored[b"t:*"]) == sum(loc.ats("") for loc in expected.locations)


async def test_a_partial_write_announces_only_its_locations(store: AvailabilityStore) -> None:
    many = [location(f"S{n:03d}", 5) for n in range(200)]
    await store.write_records([sku_of("Q", many)], 500)
    pubsub = store.client.pubsub()
    await pubsub.ssubscribe(store.change_channel("Q"))
    try:
        await pubsub.get_message(timeout=1)  # the subscription's confirmation
        sold = location("S123", 4)
        [reply], _ = await store.write_encoded([encode_partial("Q", [sold])])
        assert reply.version == 501
        message: Any = await pubsub.get_message(timeout=2)
        assert len(message["data"]) < 200  # one location, not two hundred
        change = decode_change(message["data"])
        assert (change.version, change.whole, change.changed, change.removed) == (
            501, False, (sold,), (),
        )  # fmt: skip
        merged = merge_locations(sku_of("Q", many), "Q", False, change.changed)
        assert merged == sku_of("Q", [sold if loc.location_id == "S123" else loc for loc in many])
        # The same figures again: nothing written, announced or bumped.
        [again], _ = await store.write_encoded([encode_partial("Q", [sold])])
        assert again.version == 0
        assert await pubsub.get_message(timeout=0.3) is None
        assert (await fields(store, "Q"))[b"v"] == b"501"
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_a_location_removed_and_one_added(store: AvailabilityStore) -> None:
    await store.write_records([sku_of("R", [location("A", 5), location("B", 7)])], 10)
    [reply], _ = await store.write_encoded([encode_partial("R", ["A", location("C", 3)])])
    assert reply.version == 11
    expected = sku_of("R", [location("B", 7), location("C", 3)])
    await assert_reads(store, expected)
    assert b"a:A" not in await fields(store, "R")


async def test_partial_writes_that_need_a_whole_one_write_nothing(
    store: AvailabilityStore,
) -> None:
    # No record yet.
    [reply], _ = await store.write_encoded([encode_partial("N", [location("A", 1)])])
    assert (reply.version, reply.need_full) == (0, True)
    assert await fields(store, "N") == {}
    # A buffer for a channel the record does not know ("market").
    await store.write_records([sku_of("N", [location("A", 1, 0, {"online": 1})])], 10)
    before = await fields(store, "N")
    new_channel = location("A", 1, 0, {"online": 1, "market": 2})
    [reply], _ = await store.write_encoded([encode_partial("N", [new_channel])])
    assert (reply.version, reply.need_full) == (0, True)
    assert await fields(store, "N") == before
    # Written whole, the record knows it.
    [whole], _ = await store.write_encoded([encode_whole(sku_of("N", [new_channel]))])
    assert whole.version == 11
    await assert_reads(store, sku_of("N", [new_channel]))


async def test_a_whole_write_converts_an_old_record(store: AvailabilityStore) -> None:
    key = store.sku_key("OLD")
    await store.client.hset(key, mapping={"v": "40", "d": "{}", "*": "x", "c:online": "y"})
    assert await store.read_tail("OLD", "online") is None  # not a record of this layout
    expected = sku_of("OLD", [location("A", 3)])
    assert await store.write_records([expected]) == [41]
    assert not {b"d", b"*", b"c:online"} & set(await fields(store, "OLD"))
    await assert_reads(store, expected)


async def test_reads_count_live_holds_at_their_locations(store: AvailabilityStore) -> None:
    figures = sku_of("H", [location(f"S{n}", 10) for n in range(5)])
    await store.write_records([figures], 100)
    holds = ReservationStore(store)
    now = 1_000
    placement = await holds.place("H", "cart-1", "online", 4, ["S3"], now, 2**50)
    assert placement.location_id == "S3" and placement.change is not None
    # The change names the location whose holds changed, with the hold counted.
    served = placement.change.served
    assert [(loc.location_id, loc.reserved) for loc in served.locations] == [("S3", 5)]
    expected = with_held(figures, {"S3": 4})
    assert await store.read_tail("H", "online") == answer_tail(expected, "online")
    assert await store.read_availability("H") == expected
    [record] = await store.read_folded(["H"])
    assert (record.version, record.folded, record.held) == (101, figures, {"S3": 4})
    body = orjson.loads(b"{" + (await store.read_tail("H", "online") or b""))
    assert body["ats"] == sum(loc.ats("online") for loc in expected.locations)


async def test_a_read_of_one_location_reads_that_location(store: AvailabilityStore) -> None:
    figures = sku_of("L", [location("A", 5, 1, {"online": 2}), location("B", 9)])
    await store.write_records([figures], 100)
    for channel in ("online", "pos"):
        for name in ("A", "B"):
            narrowed = sku_of("L", [loc for loc in figures.locations if loc.location_id == name])
            assert await store.read_location_tail("L", channel, name) == answer_tail(
                narrowed, channel
            )
    assert await store.read_location_tail("L", "online", "Z") == b'"ats":0,"locations":[]}'
    assert await store.read_location_tail("NEVER", "online", "A") is None
    await ReservationStore(store).place("L", "r", "online", 3, ["B"], 1_000, 2**50)
    held = sku_of("L", [location("B", 9)])
    assert await store.read_location_tail("L", "pos", "B") == answer_tail(
        with_held(held, {"B": 3}), "pos"
    )


async def test_holds_that_expired_with_their_key_still_name_their_location(
    store: AvailabilityStore,
) -> None:
    """The holds key expires at its last deadline on its own; the record remembers
    where the holds were (``hl``), so the worker's look republishes that location."""
    await store.write_records([sku_of("K", [location("A", 5), location("B", 5)])], 100)
    now = time.time_ns() // 1_000_000
    placed = await ReservationStore(store).place("K", "r", "online", 2, ["B"], now, now + 50)
    assert placed.location_id == "B"
    await asyncio.sleep(0.2)
    assert not await store.client.exists(store.holds_key("K"))  # gone by itself
    refreshed = await HoldChecks(store, 4).refresh("K", time.time_ns() // 1_000_000, ["r"])
    assert refreshed is not None
    assert refreshed.version == 102  # the lapse announced
    assert [(loc.location_id, loc.reserved) for loc in refreshed.served.locations] == [("B", 1)]
    assert b"hl" not in await fields(store, "K")


async def test_a_joined_answer_is_kept_until_the_record_changes(store: AvailabilityStore) -> None:
    figures = sku_of(
        "J", [location(f"S{n}", 5, 0, {"online": 1} if n == 0 else {}) for n in range(30)]
    )
    await store.write_records([figures], 100)
    for channel, field in (("pos", b"j:*"), ("online", b"j:online")):
        first = await store.read_tail("J", channel)
        stored = await fields(store, "J")
        assert stored[field] == first and stored[field.replace(b"j:", b"jv:")] == b"100"
        # Served from what was kept: the same bytes, and a planted one is believed
        # (so the kept field is what answers).
        await store.client.hset(store.sku_key("J"), field, b'"ats":-1,"locations":[]}')
        assert await store.read_tail("J", channel) == b'"ats":-1,"locations":[]}'
        await store.client.hset(store.sku_key("J"), field, first or b"")
    # A change: the next read joins afresh, whatever is kept.
    sold = location("S7", 4)
    await store.write_encoded([encode_partial("J", [sold])])
    changed = sku_of("J", [sold if loc.location_id == "S7" else loc for loc in figures.locations])
    await assert_reads(store, changed)
    # A whole write of the same figures changes nothing, kept answers included; one
    # of other figures drops them.
    await store.mark_published([("J", 101)])
    assert await store.write_records([changed]) == [0]
    assert b"j:*" in await fields(store, "J")
    assert await store.write_records([figures]) == [102]
    assert not {b"j:*", b"jv:*", b"j:online"} & set(await fields(store, "J"))
    await assert_reads(store, figures)
