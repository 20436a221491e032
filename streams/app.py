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
import logging
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer
from faust.types import TP, EventT

from availability.changes import event_locations
from availability.display import clip
from availability.events import (
    Event,
    ReservationCreated,
    ReservationFulfilled,
    ReservationReleased,
    event_time,
    event_type,
)
from availability.journal import journal_batch
from availability.rules import Rule
from availability.state import SkuState
from infra.config import Settings
from infra.dead_letters import MAX_REASON_CHARS, dead_letter_record
from infra.hold_checks import HoldChecks
from infra.rules_log import RulesLog
from infra.store import AvailabilityStore
from infra.topics import durability_configs
from streams.change_feed import ChangeFeed
from streams.faust_app import SkuStateTable, build_app
from streams.faust_internals import (
    aiokafka_producer,
    mark_range_done,
)
from streams.hold_sweep import HoldSweep
from streams.intake import Clock, Refusal, forwarded_value, read_event
from streams.kafka import HomePartitions, OutgoingRecords
from streams.metrics import WorkerMetrics
from streams.partition_progress import PartitionProgress
from streams.pruning import Pruner
from streams.rebuild import ServingRebuild
from streams.serving import ServingWriter, now_micros
from streams.task_stacks import log_task_stacks
from streams.worker_readings import register_worker_readings
from streams.worker_status import WorkerStatus

log = logging.getLogger(__name__)

FEED_DRAIN_ON_STOP = 5.0  # seconds the change feed gets to publish what it holds
OWNED_CACHE_SECONDS = 0.1  # how long the set of owned partitions is reused
#: A window that brings this many events or more means events arrive faster than
#: single windows are folded (see Processor.fold_windows).
BUSY_WINDOW = 32


_RESERVATION_EVENTS = (ReservationCreated, ReservationReleased, ReservationFulfilled)
#: Seconds allowed between the API's clock (a line's occurred_at) and the worker's.
HANDOVER_CLOCK_MARGIN = 60.0


@dataclass(slots=True)
class _Tally:
    """What a batch folded: for the serving records and the latency histograms."""

    # SKU -> the locations its events named (None: the SKU is new, written whole)
    changed: dict[str, set[str] | None] = field(default_factory=dict)
    event_times: list[int] = field(default_factory=list)
    publish_times: list[float] = field(default_factory=list)


def _note_changed(tally: _Tally, sku: str, locations: set[str] | None) -> None:
    if sku in tally.changed:
        marked = tally.changed[sku]
        if marked is None or locations is None:
            tally.changed[sku] = None
        else:
            marked |= locations
    else:
        tally.changed[sku] = locations


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
        self.store = AvailabilityStore.for_settings(settings)
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
        self.hold_sweep = HoldSweep(
            HoldChecks(self.store, settings.partitions),
            self.feed,
            owned=self._owned_partitions,
            owns=self.owns,
            line_locations=self._line_locations,
        )
        self.rebuild = ServingRebuild(
            self.store,
            self.writer,
            partitions=settings.partitions,
            owned=self._owned_partitions,
            skus_in=self._skus_in,
        )
        self.metrics = WorkerMetrics()
        self.status = WorkerStatus(self)
        register_worker_readings(self)
        self.counts: Counter[str] = Counter()
        self.progress = PartitionProgress(settings, app, self.source.topics)
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

        @app.timer(interval=settings.expiry_tick)  # type: ignore[untyped-decorator]
        async def check_reservation_holds() -> None:
            await self.hold_sweep.sweep()

        @app.timer(interval=settings.heartbeat_interval)  # type: ignore[untyped-decorator]
        async def report_status() -> None:
            await self.status.report()

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
            self.progress.processed.clear()
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
        await self.progress.close()
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

    async def _send_changes(
        self, changes: Sequence[tuple[str, bytes, bytes]]
    ) -> list[Awaitable[Any]]:
        records = OutgoingRecords(self._producer(), self.settings.changes_topic)
        for sku, key, value in changes:
            records.add(self.home(sku), key, value)
        return await records.send()

    @property
    def ready(self) -> bool:
        return (
            self.recovered
            and self.writer.rules_ready.is_set()
            and not self.app.rebalancing
            and not self.rebuild.pending
        )

    # --- the fold ---

    def _line_locations(self, sku: str, reservation_ids: Sequence[str]) -> list[str]:
        """Where the fold has these reservation lines' holds (the hold sweep
        republishes those locations)."""
        state = self.states.by_sku.get(sku)
        if state is None:
            return []
        found = []
        for rid in reservation_ids:
            line = state.reservations.get(rid)
            if line is not None and line.hold is not None:
                found.append(line.hold.location_id)
        return found

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
                        or self.progress.waiting_events() - len(gathered)
                        >= settings.fold_batch_size
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
            if tp not in self.progress.processed:
                await self.progress.learn_committed(tp)
            self.progress.track_offset(tp, message.offset, gaps)
        journal = OutgoingRecords(self._producer(), self.states.journal_topic)
        self.pruner.step(clock, journal)
        for tp, (start, end) in gaps.items():
            # Read and folded a piece at a time: a skipped range may be long.
            async for piece in self.progress.read_gap(tp, start, end):
                await self._fold_messages(piece, clock, tally, journal, sent)
        await self._fold_messages(messages, clock, tally, journal, sent)
        sent.extend(await journal.send())
        if tally.changed:
            # Serving records first, while the broker acknowledges the changelog: the
            # figures are visible sooner. Safe in either order: should the worker die
            # before the acks, the batch's offsets are not committed, and folding it
            # again gives the very state (and records) Redis already shows.
            self.writer.mark_locations(tally.changed)
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
            # The locations the events can change, with the state before the fold and
            # after it (a reservation line's hold may move).
            touched: set[str] = set()
            for event, _, _ in items:
                touched |= event_locations(state, event)
            result = journal_batch(
                state, [(event, raw) for event, raw, _ in items], settle_before=clock.settle_before
            )
            for event, _, _ in items:
                touched |= event_locations(state, event)
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
                    _note_changed(tally, sku, touched)
                continue
            partition = self.home(sku)
            if new:
                self.states.adopt(sku, state, partition)
            for entry in result.entries:
                journal.add(partition, entry.key.encode(), entry.value)
            if lines:
                self.writer.note_folded(sku, lines)
            _note_changed(tally, sku, None if new else touched)
        for name, count in folded.items():
            self.counts[f"folded:{name}"] += count
            self.metrics.folded.labels(name).inc(count)

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
        """Mark what the rule covers (before and after the change): its SKU or every
        SKU, at its location or at every location (whole)."""
        rules = [rule for rule in (before, after) if rule is not None]
        skus = {rule.sku for rule in rules}
        places = {rule.location_id for rule in rules}
        states = self.states.by_sku
        marked = list(states) if None in skus else [s for s in skus if s and s in states]
        if None in places:
            self.writer.mark(marked)
        else:
            located = {place for place in places if place is not None}
            self.writer.mark_locations({sku: set(located) for sku in marked})
