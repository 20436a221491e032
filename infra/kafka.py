"""Plain Kafka clients the worker, the APIs and the operator CLI share: where a key's
partition is, reading ranges and whole topics outside any consumer group, and the
check of the topics the worker needs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives ``key``.

    Faust's producer uses the same function for tables created with
    ``use_partitioner=True``, so an event on this partition of an input topic and
    its SKU's table entry live on the same worker.
    """
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class RangeReader:
    """Reads given offset ranges of partitions, outside any consumer group."""

    def __init__(self, bootstrap_servers: str, client_id: str) -> None:
        self._servers = bootstrap_servers
        self._client_id = client_id
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def read(self, topic: str, partition: int, start: int, end: int) -> list[Any]:
        """The records with ``start <= offset < end`` (fewer where offsets are empty)."""
        async with self._lock:
            if self._consumer is None:
                self._consumer = AIOKafkaConsumer(
                    bootstrap_servers=self._servers,
                    client_id=self._client_id,
                    enable_auto_commit=False,
                    fetch_max_wait_ms=100,
                )
                await self._consumer.start()
            consumer = self._consumer
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, start)
            records: list[Any] = []
            while (position := await consumer.position(tp)) < end:
                batches = await consumer.getmany(tp, timeout_ms=1000)
                if not batches.get(tp):
                    highwater = consumer.highwater(tp)
                    if highwater is not None and position >= highwater:
                        # Nothing exists past the partition's end: the rest of the
                        # range is offsets without records.
                        break
                records.extend(r for r in batches.get(tp, []) if r.offset < end)
            return records

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()


async def read_topic(
    bootstrap_servers: str, topic: str, *, timeout: float = 60.0, idle: float = 2.0
) -> list[Any]:
    """Every record of ``topic`` (all partitions, outside any consumer group), in
    partition and offset order. Reads until each partition's end offset (as of the
    start) is reached, or nothing more came for ``idle`` seconds; TimeoutError after
    ``timeout``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer.topics()  # refresh the metadata once
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        records: list[Any] = []
        async with asyncio.timeout(timeout):
            last_new = time.monotonic()
            while True:
                batches = await consumer.getmany(*tps, timeout_ms=200)
                if any(batches.values()):
                    for batch in batches.values():
                        records.extend(batch)
                    last_new = time.monotonic()
                    continue
                positions = [await consumer.position(tp) for tp in tps]
                reached = all(pos >= end[tp] for pos, tp in zip(positions, tps, strict=True))
                if reached or time.monotonic() - last_new >= idle:
                    break
        records.sort(key=lambda r: (r.partition, r.offset))
        return records
    finally:
        await consumer.stop()


async def topic_problems(bootstrap_servers: str, expected: dict[str, int]) -> list[str]:
    """What is wrong with the topics the worker needs: missing ones, or ones whose
    partition count differs from what SKU routing assumes."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        existing = await consumer.topics()
        problems = []
        for topic, partitions in expected.items():
            if topic not in existing:
                problems.append(f"topic {topic!r} does not exist")
                continue
            found = len(consumer.partitions_for_topic(topic) or ())
            if found != partitions:
                problems.append(f"topic {topic!r} has {found} partitions, expected {partitions}")
        return problems
    finally:
        await consumer.stop()
