"""Kafka details of the processor: its Faust transport (the consumer's fetch wait), SKU
home partitions, and records sent to the producer in whole batches."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from aiokafka import AIOKafkaProducer
from faust.transport.drivers import aiokafka as faust_aiokafka

from infra.kafka import partition_for


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
