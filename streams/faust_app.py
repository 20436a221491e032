"""The worker's Faust app and its state table.

``SkuStateTable`` keeps SKU -> ``SkuState`` with a journal of small entries per SKU
(``availability.journal``) as its changelog; ``build_app`` is the one place the
app's broker, security and batching configuration is set (the worker and the
benchmark's floor agent share it)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import faust
from faust.types import EventT

from availability.journal import CorruptEntry, restore
from availability.state import SkuState
from infra.config import Settings
from infra.kafka import faust_broker_credentials
from streams.faust_internals import key_partitions, store_dict
from streams.kafka import Transport
from streams.serving import now_micros

if TYPE_CHECKING:
    from streams.app import Processor

log = logging.getLogger(__name__)


class AvailabilityApp(faust.App):
    fetch_max_wait_ms: int = 500
    processor: Processor | None = None

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)

    async def on_start(self) -> None:
        await super().on_start()
        if self.processor is not None:
            # /livez on the metrics port fails when the loop stops turning
            # (infra.probes). Started here, not as an app task: Faust starts those
            # only after the first table recovery, which may take minutes.
            self.processor.metrics.heartbeat.start()

    async def on_stop(self) -> None:
        if self.processor is not None:
            await self.processor.drain_feed()  # while the producer still runs
        await super().on_stop()
        if self.processor is not None:
            await self.processor.close()


def build_app(settings: Settings, app_id: str) -> AvailabilityApp:
    """The Faust app of a worker (also the benchmark's floor agent: the same config)."""
    app = AvailabilityApp(
        app_id,
        broker=settings.broker,
        # TLS and SASL (AVAILABILITY_KAFKA_*): Faust's consumers, producer and topic
        # admin connect as every other client does (infra.kafka).
        broker_credentials=faust_broker_credentials(settings),
        store="memory://",
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=settings.broker_session_timeout,
        broker_heartbeat_interval=settings.broker_heartbeat_interval,
        broker_request_timeout=settings.broker_request_timeout,
        producer_max_batch_size=settings.producer_max_batch_size,
        # A dead letter may be as large as the broker takes (streams.dead_letters);
        # Faust's default request limit (1,000,000 bytes) is below Kafka's 1 MiB.
        producer_max_request_size=max(1_000_000, settings.dead_letter_max_bytes),
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        table_cleanup_interval=3600.0,
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    return app


class SkuStateTable(faust.Table):  # type: ignore[type-arg]
    """SKU -> ``SkuState``, made durable as a journal (``availability.journal``) in
    the table's changelog topic.

    Every entry of a SKU goes to the SKU's partition (Kafka's default partitioner on
    the SKU's bytes), which is the partition of its events in the input topics, so
    a worker recovers the state of exactly the SKUs it is assigned. Faust's own
    table writes (one record per key, the whole value) are not used: the worker
    sends the entries in batches (``Processor.process``), and recovery folds them
    back (``apply_changelog_batch``).
    """

    def _serializer_from_type(self, typ: Any) -> Any:
        return "raw"  # keys and values are the journal's own bytes

    def __init__(self, *args: Any, partitions: int, max_future_skew: float, **kwargs: Any) -> None:
        super().__init__(*args, partitions=partitions, **kwargs)
        self.partition_count = partitions
        self.max_future_skew = max_future_skew
        self.corrupt_entries = 0

    @property
    def by_sku(self) -> dict[str, SkuState]:
        """The states, as a plain dict (the table's mapping interface is slower)."""
        return cast(dict[str, SkuState], store_dict(self.data))

    @property
    def journal_topic(self) -> str:
        return self.changelog_topic.get_topic_name()

    def adopt(self, sku: str, state: SkuState, partition: int) -> None:
        """Hold a SKU's state created by the fold (its journal is written apart)."""
        self.by_sku[sku] = state
        # The memory store forgets the SKUs of partitions it no longer owns after a
        # rebalance, by this map.
        key_partitions(self.data)[sku] = partition

    def apply_changelog_batch(self, batch: Iterable[EventT[Any]]) -> None:
        """Recovery: fold journal entries back into the states."""
        states = self.by_sku
        key_partition = key_partitions(self.data)
        # As the worker folds: baselines older than the skew are settled.
        settle_before = now_micros() - int(self.max_future_skew * 1_000_000)
        for event in batch:
            message = event.message
            try:
                if message.key is None:
                    raise CorruptEntry("an entry without a key")
                sku = restore(
                    states, message.key.decode(), message.value, settle_before=settle_before
                )
            except (CorruptEntry, UnicodeDecodeError) as exc:
                # Not written by this code. Faust would log and drop the whole rest of
                # the batch; one entry is dropped here, loudly.
                self.corrupt_entries += 1
                log.error(
                    "journal %s[%d]@%d: skipping an entry: %s",
                    message.topic,
                    message.partition,
                    message.offset,
                    exc,
                    extra={
                        "topic": message.topic,
                        "partition": message.partition,
                        "offset": message.offset,
                    },
                )
                continue
            key_partition[sku] = message.partition
