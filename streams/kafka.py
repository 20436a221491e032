"""Kafka details the processor relies on: partitioning and the consumer's fetch wait."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2
from faust.transport.drivers import aiokafka as faust_aiokafka


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives ``key``.

    Faust's producer uses the same function for tables created with
    ``use_partitioner=True``, so an event on this partition of an input topic and
    its SKU's table entry live on the same worker.
    """
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


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
            while await consumer.position(tp) < end:
                batches = await consumer.getmany(tp, timeout_ms=1000)
                records.extend(r for r in batches.get(tp, []) if r.offset < end)
            return records

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()


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
