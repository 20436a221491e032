"""``AvailabilityStore`` against the real Redis: the write scripts survive a Redis that
has forgotten them (restarted, replaced or flushed)."""

from __future__ import annotations

import pytest
from redis.exceptions import ResponseError

from availability.ats import LocationAvailability, SkuAvailability
from infra.store import AvailabilityStore


def record(sku: str, on_hand: int) -> SkuAvailability:
    return SkuAvailability(sku, (LocationAvailability("S1", on_hand, 0, 0, 0, 0, {}),), None)


async def test_writes_and_marks_go_on_after_the_script_cache_is_flushed(
    store: AvailabilityStore,
) -> None:
    first = await store.write_records([record("A", 5), record("B", 7)], first_version=100)
    assert first == [100, 100]
    await store.client.script_flush()

    again = await store.write_records([record("A", 4), record("B", 7)], first_version=200)
    assert again == [101, 100]  # A changed; B unchanged but its version never marked
    await store.client.script_flush()
    await store.mark_published([("A", 101), ("B", 100)])

    assert await store.write_records([record("A", 4), record("B", 7)]) == [0, 0]
    assert await store.read_tail("A", "online") is not None
    assert (await store.read_availability("A")) == record("A", 4)


async def test_an_error_reply_fails_the_call_and_leaves_the_connection_usable(
    store: AvailabilityStore,
) -> None:
    await store.client.set(store.sku_key("C"), b"not a hash")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await store.write_records([record("A", 1), record("C", 2), record("B", 3)], 100)
    # Every reply of the failed call was read: the next calls get their own answers.
    for _ in range(5):
        assert await store.write_records([record("A", 1), record("B", 3)], 200) == [100, 100]
    assert (await store.read_availability("B")) == record("B", 3)
