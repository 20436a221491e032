"""Plain Kafka clients the worker, the APIs and the operator CLI share: where a key's
partition is, reading ranges and whole topics outside any consumer group, and the
check of the topics the worker needs."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class RangePiece:
    """A piece of a range: its records, the offset to go on from (the range's end
    when it is all read), and how many offsets at its start were gone (deleted by
    retention: before the partition's log start)."""

    records: list[Any]
    next_offset: int
    lost: int = 0


class RangeReader:
    """Reads given offset ranges of partitions, outside any consumer group, a
    bounded piece at a time."""

    def __init__(self, bootstrap_servers: str, client_id: str) -> None:
        self._servers = bootstrap_servers
        self._client_id = client_id
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def read(
        self,
        topic: str,
        partition: int,
        start: int,
        end: int,
        *,
        max_records: int,
        max_bytes: int,
        timeout: float,
    ) -> RangePiece:
        """The records with ``start <= offset < end``, at most ``max_records`` of them
        and about ``max_bytes`` of keys and values (a piece stops at the first record
        past either bound, and holds one record at least); read the rest from
        ``next_offset``. Offsets before the partition's log start are skipped and
        counted in ``lost``. TimeoutError when the piece took more than ``timeout``
        seconds (nothing is lost: ask again)."""
        async with asyncio.timeout(timeout), self._lock:
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
            log_start = (await consumer.beginning_offsets([tp]))[tp]
            lost = max(0, min(end, log_start) - start)
            start += lost
            consumer.seek(tp, start)
            records: list[Any] = []
            size = 0
            next_offset = end
            while (position := await consumer.position(tp)) < end:
                batches = await consumer.getmany(tp, timeout_ms=1000)
                if not batches.get(tp):
                    highwater = consumer.highwater(tp)
                    if highwater is not None and position >= highwater:
                        # Nothing exists past the partition's end: the rest of the
                        # range is offsets without records.
                        break
                for record in batches.get(tp, []):
                    if record.offset >= end:
                        break
                    if records and (len(records) >= max_records or size >= max_bytes):
                        next_offset = record.offset
                        break
                    records.append(record)
                    size += len(record.key or b"") + len(record.value or b"")
                if next_offset < end:
                    break
            return RangePiece(records, next_offset, lost)

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()


class CommittedOffsets:
    """Reads a consumer group's committed offsets from the broker (it never joins the
    group: no subscription)."""

    def __init__(self, bootstrap_servers: str, group_id: str) -> None:
        self._servers = bootstrap_servers
        self._group_id = group_id
        self._consumer: AIOKafkaConsumer | None = None

    async def committed(self, topic: str, partition: int) -> int | None:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._servers,
                group_id=self._group_id,
                client_id=f"{self._group_id}-committed",
                enable_auto_commit=False,
            )
            await consumer.start()
            self._consumer = consumer
        offset: int | None = await self._consumer.committed(TopicPartition(topic, partition))
        return offset

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
