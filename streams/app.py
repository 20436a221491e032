"""The stream processor: folds the input topics into per-SKU table state and
keeps the Redis serving records in step.

Routing. State lives in a table keyed by SKU whose changelog partition is the
Kafka default partitioner's choice for the SKU, and every input topic has the
same partition count, so a worker owns a SKU when it owns that partition of the
input topics. An event whose Kafka key is not its SKU, or that sits on another
partition (a producer with another partitioner), is forwarded unchanged to the
internal re-key topic on its SKU's partition and folded there: never mis-routed.

Delivery (at least once). A batch's events are acked, so their offsets can be
committed, only after the broker has acknowledged every write the batch caused:
its changelog records, dead letters and forwarded events (``Processor.process``).
A crash makes Kafka redeliver what was not committed; the fold ignores what it
has already seen (``availability.state``), so nothing counts twice.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from typing import Any

import faust
from faust.types import TP, AppT, EventT

from availability.events import InvalidEvent, event_type, parse_event
from availability.rules import Rule
from availability.state import SkuState, fold
from services.config import Settings
from services.rules_log import RulesLog
from services.store import AvailabilityStore
from streams.change_feed import ChangeFeed
from streams.codec import SkuStateCodec, encode_state
from streams.dead_letters import dead_letter_record
from streams.kafka import RangeReader, Transport, partition_for
from streams.serving import ServingWriter, now_micros

log = logging.getLogger(__name__)

FEED_DRAIN_ON_STOP = 5.0  # seconds the change feed gets to publish what it holds
OWNED_CACHE_SECONDS = 0.1  # how long the set of owned partitions is reused
PROGRESS_LOG_INTERVAL = 10.0  # seconds between progress lines while busy
IDLE_LOG_INTERVAL = 300.0  # ... and while idle


class AvailabilityApp(faust.App):
    fetch_max_wait_ms: int = 500
    processor: Processor | None = None

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)

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
        store="memory://",
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=settings.broker_session_timeout,
        broker_heartbeat_interval=settings.broker_heartbeat_interval,
        broker_request_timeout=settings.broker_request_timeout,
        producer_max_batch_size=settings.producer_max_batch_size,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        table_cleanup_interval=3600.0,
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    return app


async def send_keyed(
    app: AppT, topic: str, key: bytes, value: bytes, partitions: int
) -> Awaitable[Any]:
    """Hand a record straight to the producer, on the key's default partition;
    returns the broker's ack.

    For records that are bytes already: a topic's send path (serializers,
    pending-message objects, Faust's producer buffer) cost more per record than the
    fold itself.
    """
    sent: Awaitable[Any] = await app.producer.send(
        topic, key, value, partition=partition_for(key, partitions), timestamp=None, headers=None
    )
    return sent


class SkuStateTable(faust.Table):  # type: ignore[type-arg]
    """SKU -> ``SkuState``, changelogged with the SKU's bytes as the key.

    Faust picks a table's serializers from its key and value types (JSON by
    default). The changelog key must be the SKU's raw bytes, exactly as in the input
    topics, so that the partitioner puts a SKU's state on its events' partition.
    """

    def _serializer_from_type(self, typ: Any) -> Any:
        if typ is str:
            return "raw"
        if typ is None:
            return SkuStateCodec()
        return super()._serializer_from_type(typ)

    def __init__(self, *args: Any, partitions: int, **kwargs: Any) -> None:
        super().__init__(*args, partitions=partitions, **kwargs)
        self.partition_count = partitions

    async def put(self, sku: str, state: SkuState) -> Awaitable[Any]:
        """``table[sku] = state``; returns the ack of its changelog record.

        The same record (raw SKU key, the codec's value, the partitioner's partition)
        as Faust's own path, but sent by ``send_keyed``.
        """
        self.data[sku] = state
        return await send_keyed(
            self.app,
            self.changelog_topic.get_topic_name(),
            sku.encode(),
            encode_state(state),
            self.partition_count,
        )


class Processor:
    """Everything one worker does, around the Faust app that drives it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}"
        app = build_app(settings, settings.faust_app_id)
        self.app = app
        self.partitions = settings.partitions
        self.states = SkuStateTable(
            app,
            name="sku-state",
            beacon=app.tables.beacon,
            partitions=settings.partitions,
            key_type=str,
            use_partitioner=True,
        )
        app.tables.add(self.states)
        self.source = app.topic(
            *settings.input_topics,
            settings.rekey_topic,
            key_serializer="raw",
            value_serializer="raw",
            acks=True,
        )
        self.rekey_topic = app.topic(
            settings.rekey_topic, key_serializer="raw", value_serializer="raw", internal=False
        )
        self.dlq_topic = app.topic(
            settings.dlq_topic, key_serializer="raw", value_serializer="raw", internal=False
        )
        self.store = AvailabilityStore.from_url(
            settings.redis_url, settings.redis_key_prefix, settings.redis_max_connections
        )
        self.rules = RulesLog(settings, on_change=self._on_rule_change)
        self.feed = ChangeFeed(self.store, self._send_change, owns=self.owns, clock=now_micros)
        self.writer = ServingWriter(
            self.store,
            rules=lambda: self.rules.book,
            state_of=self.states.get,
            owns=self.owns,
            feed=self.feed,
        )
        self.counts: Counter[str] = Counter()
        self._progress: Counter[str] = Counter()
        self._progress_logged = time.monotonic()
        self.processed: dict[TP, int] = {}
        self._paused_seen: set[TP] = set()
        self.gap_reader = RangeReader(settings.bootstrap_servers, f"{settings.faust_app_id}-gaps")
        self.recovered = False
        self._owned: tuple[float, frozenset[int]] | None = None
        self._wire()

    # --- wiring into Faust ---

    def _wire(self) -> None:
        app, settings = self.app, self.settings

        @app.agent(self.source, name="fold-events")
        async def fold_events(stream: Any) -> None:
            async for batch in stream.take_events(
                settings.fold_batch_size, within=settings.fold_batch_within
            ):
                await self.process(batch)

        @app.task  # type: ignore[untyped-decorator]
        async def start_rules() -> None:
            await self.start_rules()

        @app.task  # type: ignore[untyped-decorator]
        async def publish_changes() -> None:
            await self.feed.run()

        @app.timer(interval=settings.expiry_tick)  # type: ignore[untyped-decorator]
        async def expire_and_flush() -> None:
            self.writer.mark_expired()
            if self.writer.pending:
                await self.writer.flush()

        @app.timer(interval=settings.heartbeat_interval)  # type: ignore[untyped-decorator]
        async def report_status() -> None:
            await self.report_status()

        if settings.gc_freeze_interval > 0:

            @app.timer(interval=settings.gc_freeze_interval)  # type: ignore[untyped-decorator]
            async def freeze_long_lived() -> None:
                # The table's state is millions of objects that live for as long as the
                # worker. A full collection walked them all, 150-250 ms with the fold
                # stopped, and found nothing to free (the state has no cycles).
                # Frozen, they are left out: a full collection walks only what came
                # since the last freeze.
                gc.freeze()

        @self.states.on_recover
        async def on_recovered() -> None:
            # A new assignment: Faust seeks to the committed offsets.
            self.processed.clear()
            # Whatever Redis holds (perhaps nothing, perhaps records from before a
            # crash), rewrite every owned SKU from the recovered state.
            self.writer.mark(list(self.states.keys()))
            self.recovered = True
            log.info("table recovered: %d SKUs on this worker", len(self.states))

        app.on_partitions_revoked.connect(self._forget_owned)
        app.on_partitions_assigned.connect(self._forget_owned)
        app.processor = self

    async def drain_feed(self) -> None:
        if not await self.feed.drain(FEED_DRAIN_ON_STOP):
            # Not lost: the next owner of these SKUs publishes them (streams.change_feed).
            log.warning("stopping with %d change-feed records unpublished", self.feed.pending)

    async def close(self) -> None:
        await self.rules.stop()
        await self.gap_reader.close()
        try:
            await self.store.remove_worker(self.worker_id)
        except Exception as exc:
            log.warning("could not remove worker status: %s", exc)
        finally:
            await self.store.close()

    async def start_rules(self) -> None:
        while True:
            try:
                await self.rules.start()
                await self.rules.sync(timeout=30.0)
                break
            except Exception as exc:
                log.warning("rules log not reachable yet (%s); retrying", exc)
                await self.rules.stop()
                self.rules = RulesLog(self.settings, on_change=self._on_rule_change)
                await asyncio.sleep(1.0)
        log.info("rules log caught up: %d rules", len(self.rules.book))
        self.writer.rules_ready.set()

    async def _send_change(self, key: bytes, value: bytes) -> Awaitable[Any]:
        return await send_keyed(self.app, self.settings.changes_topic, key, value, self.partitions)

    # --- the fold ---

    def owns(self, sku: str) -> bool:
        return partition_for(sku.encode(), self.partitions) in self._owned_partitions()

    def _owned_partitions(self) -> frozenset[int]:
        # The consumer builds its assignment set anew on every call, which cost 7% of
        # the fold when asked per SKU; a rebalance drops the cached one at once.
        now = time.monotonic()
        if self._owned is None or now - self._owned[0] > OWNED_CACHE_SECONDS:
            topic = self.settings.erp_topic
            owned = frozenset(
                tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic
            )
            self._owned = (now, owned)
        return self._owned[1]

    def _forget_owned(self, *args: Any, **kwargs: Any) -> None:
        self._owned = None

    async def process(self, batch: Sequence[EventT[Any]]) -> None:
        """Fold one batch. Returns once everything it wrote to Kafka is acknowledged.

        Faust acks the batch's events (so their offsets may be committed) when this
        returns. Faust would publish messages sent from an agent only at the offset
        commit, after a flush that gives up on a slow broker; so the batch sends its
        re-key and dead-letter records at once and waits, with its changelog writes,
        until the broker has them all: an offset is never committed before the
        writes its event caused. The serving records are written meanwhile.
        """
        self.counts["batches"] += 1
        by_sku: dict[str, list[Any]] = {}
        rekey_topic = self.settings.rekey_topic
        sent: list[Awaitable[Any]] = []
        gaps: dict[TP, tuple[int, int]] = {}
        messages = [event.message for event in batch]
        for message in messages:
            self._track_offset(TP(message.topic, message.partition), message.offset, gaps)
        if gaps:
            messages.extend(await self._read_gaps(gaps))
        for message in messages:
            try:
                parsed = parse_event(message.value)
            except InvalidEvent as exc:
                sent.append(await self._dead_letter(message, exc))
                continue
            sku_key = parsed.sku.encode()
            home = partition_for(sku_key, self.partitions)
            if message.topic != rekey_topic and (
                message.key != sku_key or message.partition != home
            ):
                rekeyed = await self.rekey_topic.send(
                    key=sku_key,
                    value=message.value,
                    partition=home,
                    force=True,  # now, not attached to the offset commit (see process)
                )
                sent.append(rekeyed)
                self.counts["rekeyed"] += 1
                continue
            by_sku.setdefault(parsed.sku, []).append(parsed)
            self.counts[f"folded:{event_type(parsed)}"] += 1

        changed = []
        for sku, events in by_sku.items():
            state = self.states.get(sku)
            if state is None:
                state = SkuState(sku)
                new = True
            else:
                new = False
            touched = False
            for parsed in events:
                touched = fold(state, parsed) or touched
            if touched or new:
                sent.append(await self.states.put(sku, state))
                changed.append(sku)
        if changed:
            # Serving records first, while the broker acknowledges the changelog: the
            # figures are visible sooner. Safe in either order: should the worker die
            # before the acks, the batch's offsets are not committed, and folding it
            # again gives the very state (and records) Redis already shows.
            self.writer.mark(changed)
            await self.writer.flush()
        if sent:
            await asyncio.gather(*sent)

    def _track_offset(self, tp: TP, offset: int, gaps: dict[TP, tuple[int, int]]) -> None:
        """Note ``offset`` as processed; record a forward jump in ``gaps``.

        The offsets of our input topics have no holes, but Faust's consumer can drop
        records it had fetched when a rebalance starts while it delivers them, and
        then treat their offsets as a gap that it commits past. ``process`` reads
        such a range itself (``RangeReader``) and folds it with the batch: the fold
        does not depend on order, and ignores events it has already seen.
        """
        expected = self.processed.get(tp)
        if expected is None:
            # First record since the assignment: it should be the one at the committed
            # offset that Faust positioned the partition at.
            committed: dict[TP, int | None] = getattr(self.app.consumer, "_committed_offset", {})
            expected = committed.get(tp)
            log.info(
                "resuming %s[%d] at offset %d (committed %s)",
                tp.topic,
                tp.partition,
                offset,
                expected,
            )
        if expected is not None and offset > expected and tp not in gaps:
            gaps[tp] = (expected, offset)
        if expected is None or offset >= expected:
            self.processed[tp] = offset + 1

    async def _read_gaps(self, gaps: dict[TP, tuple[int, int]]) -> list[Any]:
        records: list[Any] = []
        for tp, (start, end) in gaps.items():
            log.warning(
                "%s[%d]: the consumer skipped offsets %d-%d; reading them directly",
                tp.topic,
                tp.partition,
                start,
                end - 1,
            )
            records.extend(await self.gap_reader.read(tp.topic, tp.partition, start, end))
        return records

    async def _dead_letter(self, message: Any, exc: InvalidEvent) -> Awaitable[Any]:
        log.warning(
            "dead letter from %s[%d]@%d: %s",
            message.topic,
            message.partition,
            message.offset,
            exc.reason,
            extra={"event_id": exc.event_id, "sku": exc.sku},
        )
        self.counts[f"dead_letters:{message.topic}"] += 1
        return await self.dlq_topic.send(
            key=message.key,
            value=dead_letter_record(
                value=message.value,
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                reason=exc.reason,
                event_id=exc.event_id,
                sku=exc.sku,
            ),
            force=True,  # now, not attached to the offset commit (see process)
        )

    # --- rules ---

    def _on_rule_change(self, before: Rule | None, after: Rule | None) -> None:
        skus = {rule.sku for rule in (before, after) if rule is not None}
        if None in skus:
            self.writer.mark(list(self.states.keys()))
        else:
            self.writer.mark(sku for sku in skus if sku is not None and sku in self.states)

    # --- status ---

    def _log_progress(self, counts: Counter[str], lags: dict[str, int]) -> None:
        self._progress.update(counts)
        now = time.monotonic()
        quiet = not self._progress and not self.writer.pending
        interval = IDLE_LOG_INTERVAL if quiet else PROGRESS_LOG_INTERVAL
        if now - self._progress_logged < interval:
            return
        folded = sum(n for name, n in self._progress.items() if name.startswith("folded:"))
        dead = sum(n for name, n in self._progress.items() if name.startswith("dead_letters:"))
        log.info(
            "progress: %d events folded, %d dead letters, %d re-keyed in %.0f s; lag %d;"
            " %d SKUs owned, %d serving writes pending, recovered=%s",
            folded,
            dead,
            self._progress["rekeyed"],
            now - self._progress_logged,
            sum(lags.values()),
            len(self.states),
            self.writer.pending,
            self.recovered,
        )
        self._progress.clear()
        self._progress_logged = now

    async def lag_by_partition(self) -> dict[str, int]:
        consumer = self.app.consumer
        lags: dict[str, int] = {}
        for tp in consumer.assignment():
            if tp.topic not in self.source.topics:
                continue
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            done = self.processed.get(tp)
            if done is None:
                done = await consumer.position(tp) or 0
            lags[f"{tp.topic}:{tp.partition}"] = max(0, highwater - done)
        return lags

    def resume_stalled_partitions(self) -> set[TP]:
        """Resume input partitions left paused outside recovery; returns them.

        Faust pauses the input partitions while tables recover and resumes them
        after, but skips the resume when it believes the recovery belongs to an
        older rebalance (seen when a broker reports the same generation twice).
        The partitions would then never be fetched again. A partition paused for two
        status reports in a row while nothing is rebalancing or recovering is
        resumed here.
        """
        app = self.app
        if not self.recovered or app.rebalancing or app.in_recovery:
            self._paused_seen = set()
            return set()
        paused_now: set[TP] = getattr(app.consumer, "_paused_partitions", set())
        paused = {tp for tp in paused_now if tp.topic in self.source.topics}
        stalled = paused & self._paused_seen
        self._paused_seen = paused - stalled
        if stalled:
            log.warning("resuming input partitions left paused: %s", sorted(stalled))
            app.consumer.resume_partitions(stalled)
        return stalled

    async def report_status(self) -> None:
        try:
            self.resume_stalled_partitions()
            lags = await self.lag_by_partition() if self.recovered else {}
            counts, self.counts = self.counts, Counter()
            self._log_progress(counts, lags)
            await self.store.add_counts(counts)
            ready = self.recovered and self.writer.rules_ready.is_set() and not self.app.rebalancing
            await self.store.report_worker(
                self.worker_id,
                {
                    "worker_id": self.worker_id,
                    "recovered": ready,
                    "lag": sum(lags.values()),
                    "lag_by_partition": lags,
                    "pending_writes": self.writer.pending,
                    "serving_writes": self.writer.writes,
                    "serving_errors": self.writer.errors,
                    "feed_pending": self.feed.pending,
                    "feed_published": self.feed.published,
                    "feed_errors": self.feed.errors,
                },
            )
        except Exception as exc:  # status is best effort; the fold goes on
            log.warning("status report failed: %s", exc)
