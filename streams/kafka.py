"""Kafka details the processor relies on: partitioning and the consumer's fetch wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2
from faust.transport.drivers import aiokafka as faust_aiokafka


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives ``key``.

    Faust's producer uses the same function for tables created with
    ``use_partitioner=True``, so an event on this partition of an input topic and
    its SKU's table entry live on the same worker.
    """
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class HomePartitions:
    """SKU -> ``partition_for`` its bytes, remembered: murmur2 in Python costs about
    3 µs a call, and the worker asks for every event (a few dozen bytes per SKU, beside
    the kilobytes of its state)."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._known: dict[str, int] = {}

    def __call__(self, sku: str) -> int:
        partition = self._known.get(sku)
        if partition is None:
            partition = self._known[sku] = partition_for(sku.encode(), self.partitions)
        return partition


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust hard-codes 1500 ms. Real Kafka answers as soon as data is there, but
        # some brokers hold every fetch for the full wait, so it is configurable.
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", 500)
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> Any:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class OutgoingRecords:
    """Records for one topic, gathered per partition and handed to the producer as
    whole batches (``send``).

    aiokafka's ``send`` costs about 15 µs of CPU a record (a future, a timeout and an
    await each); appending records to a batch and sending the batch costs about
    4 µs a record. Batches are as large as the producer's ``max_batch_size`` allows
    (``AVAILABILITY_PRODUCER_MAX_BATCH_SIZE``), and a partition's records keep their
    order.
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self.topic = topic
        self._open: dict[int, Any] = {}
        self._full: list[tuple[int, Any]] = []
        self.count = 0

    def add(self, partition: int, key: bytes, value: bytes | None) -> None:
        batch = self._open.get(partition)
        if batch is None:
            batch = self._open[partition] = self._producer.create_batch()
        if batch.append(timestamp=None, key=key, value=value) is None:
            self._full.append((partition, batch))
            batch = self._open[partition] = self._producer.create_batch()
            # An empty batch takes any one record, however large.
            batch.append(timestamp=None, key=key, value=value)
        self.count += 1

    async def send(self) -> list[Awaitable[Any]]:
        """Hand every batch to the producer, in order; returns the broker's acks."""
        batches, self._full = [*self._full, *self._open.items()], []
        self._open = {}
        return [
            await self._producer.send_batch(batch, self.topic, partition=partition)
            for partition, batch in batches
        ]


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
