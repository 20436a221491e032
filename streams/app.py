"""The stream processor: folds the input topics into per-SKU table state and
keeps the Redis serving records in step.

Routing. State lives in a table keyed by SKU, made durable as a journal of small
entries per SKU (``availability.journal``) in the table's changelog, on the
partition Kafka's default partitioner gives the SKU; every input topic has the
same partition count, so a worker owns a SKU when it owns that partition of the
input topics. An event whose Kafka key is not its SKU, or that sits on another
partition (a producer with another partitioner), is forwarded unchanged to the
internal re-key topic on its SKU's partition and folded there: never mis-routed.

Delivery (at least once). A batch's events are acked, so their offsets can be
committed, only after the broker has acknowledged every write the batch caused:
its journal entries, dead letters and forwarded events (``Processor.process``).
A crash makes Kafka redeliver what was not committed; the fold ignores what it
has already seen (``availability.state``), so nothing counts twice.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import faust
import numpy as np
from aiokafka import AIOKafkaProducer
from faust.types import TP, EventT

from availability.display import clip
from availability.events import (
    Event,
    ReservationCreated,
    ReservationFulfilled,
    ReservationReleased,
    event_time,
    event_type,
)
from availability.journal import CorruptEntry, journal_batch, restore
from availability.rules import Rule
from availability.state import SkuState
from infra.config import Settings
from infra.dead_letters import MAX_REASON_CHARS, dead_letter_record
from infra.kafka import CommittedOffsets, RangeReader, faust_broker_credentials
from infra.rules_log import RulesLog
from infra.store import AvailabilityStore
from infra.topics import durability_configs
from streams.change_feed import ChangeFeed
from streams.faust_internals import (
    aiokafka_producer,
    committed_offsets,
    key_partitions,
    mark_range_done,
    paused_partitions,
    set_committed_offset,
    store_dict,
)
from streams.intake import Clock, Refusal, forwarded_value, read_event
from streams.kafka import HomePartitions, OutgoingRecords, Transport
from streams.metrics import WorkerMetrics
from streams.pruning import Pruner
from streams.rebuild import ServingRebuild
from streams.serving import ServingWriter, now_micros

log = logging.getLogger(__name__)

FEED_DRAIN_ON_STOP = 5.0  # seconds the change feed gets to publish what it holds
OWNED_CACHE_SECONDS = 0.1  # how long the set of owned partitions is reused
PROGRESS_LOG_INTERVAL = 10.0  # seconds between progress lines while busy
IDLE_LOG_INTERVAL = 300.0  # ... and while idle
#: A window that brings this many events or more means events arrive faster than
#: single windows are folded (see Processor.fold_windows).
BUSY_WINDOW = 32


def _await_chain(awaited: Any) -> list[str]:
    lines = []
    while awaited is not None:
        frame = None
        for name in ("cr_frame", "gi_frame", "ag_frame"):
            frame = frame or getattr(awaited, name, None)
        if frame is not None:
            code = frame.f_code
            lines.append(f"  {code.co_filename}:{frame.f_lineno} {code.co_name}")
        else:
            lines.append(f"  {awaited!r}")
        following = None
        for name in ("cr_await", "gi_yieldfrom", "ag_await"):
            following = following or getattr(awaited, name, None)
        awaited = following
    return lines


def log_task_stacks() -> None:
    """Log where the worker waits: every asyncio task's chain of awaits, and that of
    every suspended coroutine of the service's own code (a framework may run one
    behind a wrapper that hides it from its task)."""
    lines = []
    tasks = asyncio.all_tasks()
    for task in tasks:
        lines.append(f"task {task.get_name()}:")
        lines.extend(_await_chain(task.get_coro()))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ours = tuple(
        os.path.join(root, package) + os.sep for package in ("streams", "services", "infra")
    )
    gc.unfreeze()  # frozen objects are invisible to get_objects; the timer freezes again
    for obj in gc.get_objects():
        frame = getattr(obj, "cr_frame", None) if inspect.iscoroutine(obj) else None
        if frame is not None and frame.f_code.co_filename.startswith(ours):
            lines.append(f"coroutine {frame.f_code.co_name}:")
            lines.extend(_await_chain(obj))
    log.warning("%d tasks:\n%s", len(tasks), "\n".join(lines))


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


_RESERVATION_EVENTS = (ReservationCreated, ReservationReleased, ReservationFulfilled)
#: Seconds allowed between the API's clock (a line's occurred_at) and the worker's.
HANDOVER_CLOCK_MARGIN = 60.0


@dataclass(slots=True)
class _Tally:
    """What a batch folded: for the serving records and the latency histograms."""

    changed: list[str] = field(default_factory=list)
    event_times: list[int] = field(default_factory=list)
    publish_times: list[float] = field(default_factory=list)


class Processor:
    """Everything one worker does, around the Faust app that drives it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}"
        app = build_app(settings, settings.faust_app_id)
        self.app = app
        self.partitions = settings.partitions
        self.home = HomePartitions(settings.partitions)
        self.states = SkuStateTable(
            app,
            name="sku-state",
            beacon=app.tables.beacon,
            partitions=settings.partitions,
            max_future_skew=settings.max_future_skew,
            key_type=str,
            use_partitioner=True,
            # The journal is the state's only durable copy: Faust creates it with
            # AVAILABILITY_REPLICATION_FACTOR replicas, and these many must have a
            # write before the broker acknowledges it.
            extra_topic_configs=durability_configs(settings),
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
        self.feed = ChangeFeed(self.store, self._send_changes, owns=self.owns, clock=now_micros)
        self.writer = ServingWriter(
            self.store,
            rules=lambda: self.rules.book,
            state_of=self.states.by_sku.get,
            owns=self.owns,
            feed=self.feed,
            handover_horizon=int(
                (
                    settings.reservation_publish_window
                    + settings.reservation_handover_window
                    + HANDOVER_CLOCK_MARGIN
                )
                * 1_000_000
            ),
        )
        self.rebuild = ServingRebuild(
            self.store,
            self.writer,
            partitions=settings.partitions,
            owned=self._owned_partitions,
            skus_in=self._skus_in,
        )
        self.metrics = WorkerMetrics()
        self._reported_ready = False
        self._register_readings()
        self.counts: Counter[str] = Counter()
        self._progress: Counter[str] = Counter()
        self._progress_logged = time.monotonic()
        self.processed: dict[TP, int] = {}
        self._paused_seen: set[TP] = set()
        self.gap_reader = RangeReader(settings, f"{settings.faust_app_id}-gaps")
        self.committed_by_partition: dict[str, int] = {}
        self.committed_reader = CommittedOffsets(settings, settings.faust_app_id)
        self.gap_timeouts = 0
        self.gap_offsets_lost = 0
        self.pruner = Pruner(
            states=lambda: self.states.by_sku,
            home=self.home,
            owned=self._owned_partitions,
            ready=self._settled,
        )
        self.recovered = False
        self._owned: tuple[float, frozenset[int]] | None = None
        self._wire()

    # --- wiring into Faust ---

    def _wire(self) -> None:
        app, settings = self.app, self.settings

        @app.agent(self.source, name="fold-events")
        async def fold_events(stream: Any) -> None:
            await self.fold_windows(stream)

        @app.task  # type: ignore[untyped-decorator]
        async def start_rules() -> None:
            await self.start_rules()

        @app.task  # type: ignore[untyped-decorator]
        async def dump_tasks_on_signal() -> None:
            # For an operator asking a stuck worker where it waits: kill -USR1 <pid>.
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, log_task_stacks)

        @app.task  # type: ignore[untyped-decorator]
        async def publish_changes() -> None:
            await self.feed.run()

        @app.task  # type: ignore[untyped-decorator]
        async def keep_serving_layer_complete() -> None:
            await self.rebuild.run(settings.heartbeat_interval, when=self._settled)

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
            self.rebuild.force(range(self.partitions))
            self.recovered = True
            log.info("table recovered: %d SKUs on this worker", len(self.states.by_sku))

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
        await self.committed_reader.close()
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

    def _producer(self) -> AIOKafkaProducer:
        # Faust's producer wraps aiokafka's; batches are built with aiokafka's own API
        # (streams.kafka.OutgoingRecords).
        return aiokafka_producer(self.app.producer)

    async def _send_changes(self, changes: Sequence[tuple[str, bytes]]) -> list[Awaitable[Any]]:
        records = OutgoingRecords(self._producer(), self.settings.changes_topic)
        for sku, value in changes:
            records.add(self.home(sku), sku.encode(), value)
        return await records.send()

    def _register_readings(self) -> None:
        add = self.metrics.readings.add
        add(
            "availability_worker_serving_writes",
            "Serving records written to Redis",
            "counter",
            lambda: self.writer.writes,
        )
        add(
            "availability_worker_serving_write_errors",
            "Writes of serving records that failed (the records stay pending and are retried)",
            "counter",
            lambda: self.writer.errors,
        )
        add(
            "availability_worker_serving_writes_pending",
            "SKUs whose serving record is waiting to be written",
            "gauge",
            lambda: self.writer.pending,
        )
        add(
            "availability_worker_reservation_holds_handed_over",
            "Reservation holds of the API removed by the write that first counts their"
            ' folded line (README "Reservations")',
            "counter",
            lambda: self.writer.handed_over,
        )
        add(
            "availability_worker_reservation_holds_expired",
            "Reservation holds that reached their deadline without being handed over,"
            " found (and purged) by this worker's record writes",
            "counter",
            lambda: self.writer.holds_expired,
        )
        add(
            "availability_worker_serving_record_errors",
            "Serving records that could not be computed (left out, not retried until the"
            " SKU changes again; each SKU logged once)",
            "counter",
            lambda: self.writer.record_errors,
        )
        add(
            "availability_worker_skipped_offsets_lost",
            "Offsets of a range the consumer skipped that retention had deleted before"
            " the worker read it (their events are missing from the figures)",
            "counter",
            lambda: self.gap_offsets_lost,
        )
        add(
            "availability_worker_skipped_range_timeouts",
            "Reads of a skipped offset range that timed out (retried)",
            "counter",
            lambda: self.gap_timeouts,
        )
        add(
            "availability_worker_states_pruned",
            "SKU states from which settled baselines, old reservation lines or old"
            " transfer and damaged-return ids were removed",
            "counter",
            lambda: self.pruner.pruned,
        )
        add(
            "availability_worker_prune_errors",
            "SKU states whose pruning failed (left as they were)",
            "counter",
            lambda: self.pruner.errors,
        )
        add(
            "availability_worker_change_feed_published",
            "Change-feed records the broker acknowledged",
            "counter",
            lambda: self.feed.published,
        )
        add(
            "availability_worker_change_feed_errors",
            "Change-feed sends that failed (retried)",
            "counter",
            lambda: self.feed.errors,
        )
        add(
            "availability_worker_serving_records_rebuilt",
            "Serving records rewritten by a rebuild (Redis lost its data, a new assignment,"
            " or an operator's request)",
            "counter",
            lambda: self.rebuild.records_rewritten,
        )
        add(
            "availability_worker_rebuilding_partitions",
            "Partitions whose serving records this worker is rewriting now",
            "gauge",
            lambda: len(self.rebuild.rebuilding),
        )
        add(
            "availability_worker_skus",
            "SKUs whose state this worker holds",
            "gauge",
            lambda: len(self.states.by_sku),
        )
        add(
            "availability_worker_ready",
            "1 when the state is recovered, the rules loaded, and no rebalance or rebuild"
            " is under way",
            "gauge",
            # As of the last status report: read from the metrics server's thread.
            lambda: 1.0 if self._reported_ready else 0.0,
        )

    @property
    def ready(self) -> bool:
        return (
            self.recovered
            and self.writer.rules_ready.is_set()
            and not self.app.rebalancing
            and not self.rebuild.pending
        )

    # --- the fold ---

    def owns(self, sku: str) -> bool:
        return self.home(sku) in self._owned_partitions()

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

    def _skus_in(self, partitions: frozenset[int]) -> list[str]:
        home = self.home
        return [sku for sku in self.states.by_sku if home(sku) in partitions]

    def _settled(self) -> bool:
        """The state is recovered and no rebalance is moving partitions."""
        app = self.app
        return self.recovered and not app.rebalancing and not app.in_recovery

    async def fold_windows(self, stream: Any) -> None:
        """Fold the stream's events, a batch at a time, acking them after ``process``.

        Events come in windows of ``AVAILABILITY_FOLD_BATCH_WITHIN`` seconds (at most
        ``AVAILABILITY_FOLD_BATCH_SIZE`` events). A batch's cost is mostly per changed
        SKU, so while events arrive faster than single windows are folded (a burst: a
        window brought ``BUSY_WINDOW`` events or more; a backlog: a full batch more
        waits in the partitions), the windows that come within
        ``AVAILABILITY_FOLD_BATCH_MAX_WAIT`` seconds are folded as one batch, writing
        each busy SKU once for many events. Sparse traffic is folded window by
        window, so gathering adds no latency to it.
        """
        settings = self.settings
        windows = stream.noack_take(settings.fold_batch_size, within=settings.fold_batch_within)
        next_window: asyncio.Future[list[EventT[Any]]] | None = None
        gathered: list[EventT[Any]] = []
        since = 0.0
        try:
            while True:
                if next_window is None:
                    next_window = asyncio.ensure_future(anext(windows))
                if gathered:
                    remaining = settings.fold_batch_max_wait - (time.monotonic() - since)
                    await asyncio.wait({next_window}, timeout=max(0.0, remaining))
                    if not next_window.done():
                        # Nothing more came in time. The window being gathered goes on
                        # filling meanwhile; it is taken next round.
                        await self._fold_and_ack(stream, gathered)
                        gathered = []
                        continue
                else:
                    await asyncio.wait({next_window}, timeout=self.pruner.interval)
                    if not next_window.done():
                        # Idle: the state is pruned here, in the fold's own task, so
                        # that its journal entries never interleave with a batch's.
                        await self.prune_while_idle()
                        continue
                events = await next_window
                # The next window fills while this one is folded: Faust delivers events
                # whenever the fold waits for Redis or the broker.
                next_window = asyncio.ensure_future(anext(windows))
                if not gathered:
                    since = time.monotonic()
                gathered.extend(events)
                if (
                    len(gathered) < settings.fold_batch_size
                    and time.monotonic() - since < settings.fold_batch_max_wait
                    and (
                        len(events) >= BUSY_WINDOW
                        or self.waiting_events() - len(gathered) >= settings.fold_batch_size
                    )
                ):
                    continue
                await self._fold_and_ack(stream, gathered)
                gathered = []
        finally:
            if next_window is not None:
                next_window.cancel()

    async def prune_while_idle(self) -> None:
        journal = OutgoingRecords(self._producer(), self.states.journal_topic)
        try:
            if self.pruner.step(self.clock(), journal):
                await asyncio.gather(*await journal.send())
        except Exception as exc:
            # Not durable yet, not lost: a restart folds the state back unpruned and
            # the pruning is done again; the figures are the same either way.
            log.warning("writing the pruned state to the journal failed: %s", exc)

    def waiting_events(self) -> int:
        """Events in the input partitions beyond those processed (gathered ones too)."""
        consumer = self.app.consumer
        waiting = 0
        for tp, done in self.processed.items():
            highwater = consumer.highwater(tp)
            if highwater is not None and highwater > done:
                waiting += highwater - done
        return waiting

    async def _fold_and_ack(self, stream: Any, events: list[EventT[Any]]) -> None:
        await self.process(events)
        for event in events:
            await stream.ack(event)

    def clock(self) -> Clock:
        settings = self.settings
        return Clock(
            now_micros(),
            int(settings.max_future_skew * 1_000_000),
            int(settings.state_horizon * 1_000_000),
        )

    async def process(self, batch: Sequence[EventT[Any]]) -> None:
        """Fold one batch. Returns once everything it wrote to Kafka is acknowledged.

        Faust acks the batch's events (so their offsets may be committed) when this
        returns. Faust would publish messages sent from an agent only at the offset
        commit, after a flush that gives up on a slow broker; so the batch sends its
        re-key and dead-letter records at once and waits, with its changelog writes,
        until the broker has them all: an offset is never committed before the
        writes its event caused. The serving records are written meanwhile.

        No message can stop the fold: one that is not a valid event, or whose
        reading, routing or folding fails for any reason, becomes a dead letter and
        the others go on (``streams.intake``, ``journal.journal_batch``).
        """
        self.counts["batches"] += 1
        self.metrics.batches.inc()
        clock = self.clock()
        tally = _Tally()
        sent: list[Awaitable[Any]] = []
        gaps: dict[TP, tuple[int, int]] = {}
        messages = [event.message for event in batch]
        for message in messages:
            tp = TP(message.topic, message.partition)
            if tp not in self.processed:
                await self._learn_committed(tp)
            self._track_offset(tp, message.offset, gaps)
        journal = OutgoingRecords(self._producer(), self.states.journal_topic)
        self.pruner.step(clock, journal)
        for tp, (start, end) in gaps.items():
            # Read and folded a piece at a time: a skipped range may be long.
            async for piece in self._read_gap(tp, start, end):
                await self._fold_messages(piece, clock, tally, journal, sent)
        await self._fold_messages(messages, clock, tally, journal, sent)
        sent.extend(await journal.send())
        if tally.changed:
            # Serving records first, while the broker acknowledges the changelog: the
            # figures are visible sooner. Safe in either order: should the worker die
            # before the acks, the batch's offsets are not committed, and folding it
            # again gives the very state (and records) Redis already shows.
            self.writer.mark(tally.changed)
            written = await self.writer.flush()
        else:
            written = True
        if written and tally.event_times:
            now = time.time()
            latency = self.metrics.fold_latency
            latency.observe("event_time", now - np.array(tally.event_times) / 1e6)
            latency.observe("publish_time", now - np.array(tally.publish_times))
        if sent:
            await asyncio.gather(*sent)
        for tp, (start, end) in gaps.items():
            # Folded, and everything they caused is acknowledged by the broker.
            mark_range_done(self.app.consumer, tp, start, end)

    async def _fold_messages(
        self,
        messages: Sequence[Any],
        clock: Clock,
        tally: _Tally,
        journal: OutgoingRecords,
        sent: list[Awaitable[Any]],
    ) -> None:
        """Read, route and fold ``messages``; their journal entries go to ``journal``,
        the acks of their dead letters and forwarded events to ``sent``."""
        rekey_topic = self.settings.rekey_topic
        by_sku: dict[str, list[tuple[Event, bytes, Any]]] = {}
        for message in messages:
            read = read_event(message.value, clock)
            if isinstance(read, Refusal):
                sent.append(await self._dead_letter(message, read))
                continue
            try:
                home = self.home(read.sku)
                misplaced = message.topic != rekey_topic and (
                    message.partition != home or message.key != read.sku.encode()
                )
                value = forwarded_value(read, message.value) if misplaced else message.value
            except Exception as exc:  # a bug: the event goes, the batch goes on
                refusal = Refusal.failure("routing the event", exc, read.event_id, read.sku)
                sent.append(await self._dead_letter(message, refusal))
                continue
            if misplaced:
                rekeyed = await self.rekey_topic.send(
                    key=read.sku.encode(),
                    value=value,
                    partition=home,
                    force=True,  # now, not attached to the offset commit (see process)
                )
                sent.append(rekeyed)
                self.counts["rekeyed"] += 1
                self.metrics.rekeyed.inc()
                continue
            by_sku.setdefault(read.sku, []).append((read, value, message))

        states = self.states.by_sku
        folded: Counter[str] = Counter()
        for sku, items in by_sku.items():
            state = states.get(sku)
            new = state is None
            if state is None:
                state = SkuState(sku)
            result = journal_batch(
                state, [(event, raw) for event, raw, _ in items], settle_before=clock.settle_before
            )
            for index, error in result.failed:
                event, _, message = items[index]
                log.error(
                    "folding event %s of %s failed; the state is as before it",
                    event.event_id,
                    sku,
                    exc_info=error,
                    extra={"event_id": event.event_id, "sku": sku},
                )
                refusal = Refusal.failure("folding the event", error, event.event_id, sku)
                sent.append(await self._dead_letter(message, refusal))
            failed = {index for index, _ in result.failed}
            for index, (event, _, message) in enumerate(items):
                if index in failed:
                    continue
                folded[event_type(event)] += 1
                tally.event_times.append(event_time(event))
                if message.timestamp:
                    tally.publish_times.append(message.timestamp)
            # Reservation lines the state now includes: their API holds are handed
            # over with the SKU's next record (streams.serving), repeats included.
            lines = [
                event.reservation_id
                for index, (event, _, _) in enumerate(items)
                if index not in failed and isinstance(event, _RESERVATION_EVENTS)
            ]
            if not result.entries:
                if lines and not new:
                    self.writer.note_folded(sku, lines)
                    tally.changed.append(sku)
                continue
            partition = self.home(sku)
            if new:
                self.states.adopt(sku, state, partition)
            for entry in result.entries:
                journal.add(partition, entry.key.encode(), entry.value)
            if lines:
                self.writer.note_folded(sku, lines)
            tally.changed.append(sku)
        for name, count in folded.items():
            self.counts[f"folded:{name}"] += count
            self.metrics.folded.labels(name).inc(count)

    async def _learn_committed(self, tp: TP) -> None:
        """Faust sometimes starts an assignment without the committed offsets it
        seeked to (its note is None): it then commits one offset at a time, and the
        gap before the first record goes unseen. The broker's is put in its place."""
        consumer = self.app.consumer
        if committed_offsets(consumer).get(tp) is not None:
            return
        offset = await self.committed_reader.committed(tp.topic, tp.partition)
        if offset is not None:
            set_committed_offset(consumer, tp, offset)

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
            expected = committed_offsets(self.app.consumer).get(tp)
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

    async def _read_gap(self, tp: TP, start: int, end: int) -> AsyncIterator[list[Any]]:
        """The records of a skipped range, a bounded piece at a time
        (``AVAILABILITY_GAP_READ_MAX_RECORDS`` / ``_MAX_BYTES``). A piece not read
        within ``AVAILABILITY_GAP_READ_TIMEOUT`` is asked for again (the fold waits,
        as for any write to the broker); offsets lost to retention are counted."""
        settings = self.settings
        log.warning(
            "%s[%d]: the consumer skipped offsets %d-%d; reading them directly",
            tp.topic,
            tp.partition,
            start,
            end - 1,
        )
        position = start
        while position < end:
            try:
                piece = await self.gap_reader.read(
                    tp.topic,
                    tp.partition,
                    position,
                    end,
                    max_records=settings.gap_read_max_records,
                    max_bytes=settings.gap_read_max_bytes,
                    timeout=settings.gap_read_timeout,
                )
            except TimeoutError:
                self.gap_timeouts += 1
                log.warning(
                    "%s[%d]: reading skipped offsets %d-%d timed out after %.0f s; retrying",
                    tp.topic,
                    tp.partition,
                    position,
                    end - 1,
                    settings.gap_read_timeout,
                )
                await asyncio.sleep(1.0)
                continue
            if piece.lost:
                self.gap_offsets_lost += piece.lost
                log.error(
                    "%s[%d]: offsets %d-%d of a skipped range are gone (retention): %d"
                    " events cannot be read; folding from %d on",
                    tp.topic,
                    tp.partition,
                    position,
                    position + piece.lost - 1,
                    piece.lost,
                    position + piece.lost,
                    extra={"topic": tp.topic, "partition": tp.partition},
                )
            if piece.records:
                yield piece.records
            position = piece.next_offset

    async def _dead_letter(self, message: Any, refusal: Refusal) -> Awaitable[Any]:
        log.warning(
            "dead letter from %s[%d]@%d: %s",
            message.topic,
            message.partition,
            message.offset,
            clip(refusal.reason, MAX_REASON_CHARS),
            extra={
                "event_id": refusal.event_id,
                "sku": refusal.sku,
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
            },
        )
        self.counts[f"dead_letters:{message.topic}"] += 1
        self.metrics.dead_letters.labels(message.topic, refusal.kind).inc()
        record = dead_letter_record(
            key=message.key,
            value=message.value,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            reason=refusal.reason,
            event_id=refusal.event_id,
            sku=refusal.sku,
            max_bytes=self.settings.dead_letter_max_bytes,
        )
        return await self.dlq_topic.send(
            key=record.key,
            value=record.value,
            force=True,  # now, not attached to the offset commit (see process)
        )

    # --- rules ---

    def _on_rule_change(self, before: Rule | None, after: Rule | None) -> None:
        skus = {rule.sku for rule in (before, after) if rule is not None}
        if None in skus:
            self.writer.mark(list(self.states.by_sku))
        else:
            states = self.states.by_sku
            self.writer.mark(sku for sku in skus if sku is not None and sku in states)

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
            len(self.states.by_sku),
            self.writer.pending,
            self.recovered,
        )
        self._progress.clear()
        self._progress_logged = now

    async def lag_by_partition(self) -> dict[str, int]:
        """Events after the *committed* offset, per input partition: a partition whose
        commits are stuck shows, even while its events are being folded (a partition
        the group never committed counts from offset 0). The committed offsets are
        kept for the metrics (``committed_by_partition``)."""
        consumer = self.app.consumer
        committed = committed_offsets(consumer)
        lags: dict[str, int] = {}
        offsets: dict[str, int] = {}
        for tp in consumer.assignment():
            if tp.topic not in self.source.topics:
                continue
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            name = f"{tp.topic}:{tp.partition}"
            done = committed.get(tp)
            if done is not None:
                offsets[name] = done
            lags[name] = max(0, highwater - (done or 0))
        self.committed_by_partition = offsets
        return lags

    def unfolded_events(self) -> int:
        """Events in the assigned input partitions after the last one folded (after
        the committed offset where none was folded yet since the assignment)."""
        consumer = self.app.consumer
        committed = committed_offsets(consumer)
        behind = 0
        for tp in consumer.assignment():
            if tp.topic not in self.source.topics:
                continue
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            done = self.processed.get(tp)
            if done is None:
                done = committed.get(tp) or 0
            behind += max(0, highwater - done)
        return behind

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
        paused_now = paused_partitions(app.consumer)
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
            behind = self.unfolded_events() if self.recovered else 0
            counts, self.counts = self.counts, Counter()
            self._log_progress(counts, lags)
            await self.store.add_counts(counts)
            ready = self._reported_ready = self.ready
            self.metrics.lag.update(lags, self.committed_by_partition)
            await self.store.report_worker(
                self.worker_id,
                {
                    "worker_id": self.worker_id,
                    "recovered": ready,
                    # Readiness asks whether the worker has folded what is there
                    # (README "HTTP API", /readyz); the lag per partition, like the
                    # metrics and alerts, counts from the committed offsets.
                    "lag": behind,
                    "committed_lag": sum(lags.values()),
                    "lag_by_partition": lags,
                    "pending_writes": self.writer.pending,
                    "serving_writes": self.writer.writes,
                    "serving_errors": self.writer.errors,
                    "feed_pending": self.feed.pending,
                    "feed_published": self.feed.published,
                    "feed_errors": self.feed.errors,
                    "rebuilding": sorted(self.rebuild.rebuilding),
                    "records_rebuilt": self.rebuild.records_rewritten,
                },
            )
        except Exception as exc:  # status is best effort; the fold goes on
            log.warning("status report failed: %s", exc)
