"""Thousands of random and mutated messages into a real worker (``fuzz_events``):
every one is folded or dead-lettered, the worker never dies, its lag comes back to 0,
and the figures in Redis are the reference fold of the valid ones."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from availability.ats import view
from availability.identifiers import parse_timestamp
from infra.config import Settings
from infra.kafka import kafka_client_options, partition_for
from infra.store import AvailabilityStore
from tests.integration.conftest import StartService
from tests.integration.fuzz_events import MEGA, Message, fuzz_messages
from tests.integration.support import consume_all
from tests.reference import recompute

MESSAGES = 5000


def topic_name(settings: Settings, topic: str) -> str:
    return {
        "erp": settings.erp_topic,
        "pos": settings.pos_topic,
        "transfers": settings.transfers_topic,
        "reservations": settings.reservations_topic,
    }[topic]


async def publish(settings: Settings, messages: list[Message]) -> list[tuple[str, int, int]]:
    """Send in order; (topic, partition, offset) of each. Batched, with room for the
    oversized ones (the tests' ``produce`` keeps to Kafka's 1 MiB)."""
    producer = AIOKafkaProducer(
        **kafka_client_options(settings),
        acks="all",
        linger_ms=5,
        max_batch_size=65536,
        max_request_size=4 * MEGA,
        client_id="tests-fuzz",
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic_name(settings, m.topic), m.value, key=m.key, partition=m.partition
            )
            for m in messages
        ]
        await producer.flush()
        return [(r.topic, r.partition, r.offset) for r in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


async def worker_status(store: AvailabilityStore) -> dict[str, Any]:
    statuses = list((await store.workers(max_age=10)).values())
    return statuses[0] if len(statuses) == 1 else {}


async def test_a_fuzzed_stream_is_folded_or_dead_lettered_and_nothing_else(
    settings: Settings, start_service: StartService
) -> None:
    now = datetime.now(UTC)
    messages = fuzz_messages(seed=17, count=MESSAGES, partitions=settings.partitions, now=now)
    valid = [m for m in messages if m.valid]
    invalid = [m for m in messages if not m.valid]

    def rekeyed(m: Message) -> bool:
        assert m.event is not None
        sku = m.event["sku"].encode()
        return m.key != sku or (
            m.partition is not None and m.partition != partition_for(sku, settings.partitions)
        )

    worker = start_service("streams", settings, name="worker")
    store = AvailabilityStore.from_url(settings.redis_url, settings.redis_key_prefix)
    started = time.monotonic()
    try:
        # Half before the worker is up, half while it folds.
        half = len(messages) // 2
        placed = await publish(settings, messages[:half])
        placed += await publish(settings, messages[half:])

        # Every message is accounted for: folded (directly, or after the worker moved
        # it to its SKU's partition) or dead-lettered, and the lag comes back to 0.
        deadline = time.monotonic() + 90
        while True:
            counts = await store.counts()
            folded = sum(n for name, n in counts.items() if name.startswith("folded:"))
            dead = sum(n for name, n in counts.items() if name.startswith("dead_letters:"))
            status = await worker_status(store)
            if folded + dead >= len(messages) and status.get("committed_lag") == 0:
                break
            assert worker.running, worker.tail()
            assert time.monotonic() < deadline, (counts, status)
            await asyncio.sleep(0.5)
        # The dead letters are exactly the invalid messages, each whole or truncated
        # with the digest of the whole.
        letters = await consume_all(settings, settings.dlq_topic, timeout=30)
        by_origin = {}
        for record in letters:
            letter = orjson.loads(record.value)
            by_origin[(letter["topic"], letter["partition"], letter["offset"])] = letter
        expected = {where: m for where, m in zip(placed, messages, strict=True) if not m.valid}
        folded_instead = [expected[w].why for w in set(expected) - set(by_origin)]
        refused_instead = [by_origin[w]["reason"] for w in set(by_origin) - set(expected)]
        assert (folded_instead, refused_instead) == ([], [])
        assert counts.get("rekeyed", 0) == sum(1 for m in valid if rekeyed(m))
        assert (folded, dead) == (len(valid), len(invalid))
        kinds: Counter[str] = Counter()
        for where, m in expected.items():
            letter = by_origin[where]
            assert len(letter["reason"]) <= 1000
            original = base64.b64decode(letter["original"])
            if letter.get("original_truncated"):
                assert m.value is not None and len(m.value) > 1_000_000
                assert letter["original_sha256"] == hashlib.sha256(m.value).hexdigest()
                assert m.value.startswith(original)
            else:
                assert original == (m.value or b"")
                assert letter["original_is_null"] == (m.value is None)
            kinds[letter["reason"].split(":")[0][:30]] += 1
        assert any(letter.get("original_truncated") for letter in by_origin.values())
        assert any(m.value is not None and len(m.value) > MEGA for m in valid)

        # The figures are the reference fold of the valid events (resets dated just
        # now are pending: the settle window is the worker's, five minutes).
        events = [m.event for m in valid if m.event is not None]
        settle_before = parse_timestamp(
            (now - timedelta(seconds=settings.max_future_skew)).isoformat().replace("+00:00", "Z")
        )
        expected_figures = recompute(events, time.time_ns() // 1000, settle_before=settle_before)
        for sku, figures in expected_figures.items():
            stored = await store.read_availability(sku)
            assert stored is not None, sku
            assert view(stored, "online") == figures, sku
        assert worker.running, worker.tail()
        assert "Traceback" not in worker.log_text()
        print(
            f"{len(messages)} messages ({len(valid)} valid, {len(invalid)} refused) folded"
            f" in {time.monotonic() - started:.0f} s; refusals: {dict(kinds.most_common(8))}"
        )
    finally:
        await store.close()
