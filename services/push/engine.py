"""The push's consumer: reads the change feed in the consumer group ``<app_id>-push``,
hands each target the figures of its channel, and commits a partition's offset only
below the earliest record whose figure some target has not yet seen acknowledged
(deferred by a policy, queued, or under way). Replicas share the work by the feed's
partitions; a SKU's changes are on one partition, so one replica pushes a SKU.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from redis.exceptions import RedisError

from infra.config import Settings
from infra.kafka import kafka_client_options
from infra.redis_client import RedisClient
from services.push.feed import FeedChange, parse_change
from services.push.metrics import PushMetrics
from services.push.state import report_status
from services.push.target import PushTarget

log = logging.getLogger(__name__)

#: Records read per round at most.
MAX_RECORDS = 5000
#: Seconds a stopping process gives calls under way to finish.
DRAIN_TIMEOUT = 10.0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, engine: PushEngine) -> None:
        self.engine = engine

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self.engine.revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        log.info("push: partitions %s assigned", sorted(tp.partition for tp in assigned))


class PushEngine:
    def __init__(
        self,
        settings: Settings,
        targets: Sequence[PushTarget],
        redis: RedisClient,
        metrics: PushMetrics,
    ) -> None:
        self.settings = settings
        self.targets = list(targets)
        self.redis = redis
        self.metrics = metrics
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self.topic = settings.changes_topic
        self.position: dict[int, int] = {}  # next offset to read, per partition
        self.committed: dict[int, int] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.records = 0

    async def run(self) -> None:
        s = self.settings
        self.consumer = AIOKafkaConsumer(
            **kafka_client_options(s),
            group_id=s.push_group,
            client_id=f"{s.faust_app_id}-push",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(s.broker_session_timeout * 1000),
            heartbeat_interval_ms=int(s.broker_heartbeat_interval * 1000),
            request_timeout_ms=int(s.broker_request_timeout * 1000),
            fetch_max_wait_ms=s.fetch_max_wait_ms,
        )
        writers = [asyncio.create_task(t.run(), name=f"push-{t.name}") for t in self.targets]
        try:
            # Calls a crash left under way are sent again before anything new.
            await asyncio.gather(*(t.recovered.wait() for t in self.targets))
            await self.consumer.start()
            self.consumer.subscribe([self.topic], listener=_Rebalance(self))
            await self._consume(writers)
        finally:
            await self._drain(writers)
            with contextlib.suppress(Exception):
                await self.commit()
            with contextlib.suppress(Exception):
                await self.consumer.stop()

    async def _consume(self, writers: Sequence[asyncio.Task[None]]) -> None:
        assert self.consumer is not None
        last_report = last_freeze = 0.0
        channels = sorted({t.config.channel for t in self.targets})
        while True:
            for writer in writers:
                if writer.done():  # a writer's bug: stop (and restart) rather than lag
                    writer.result()
            batches = await self.consumer.getmany(timeout_ms=200, max_records=MAX_RECORDS)
            records = [r for batch in batches.values() for r in batch]
            if records:
                self.records += len(records)
                by_channel: dict[str, list[tuple[int, int, FeedChange]]] = {}
                for channel in channels:
                    parsed = by_channel[channel] = []
                    for record in records:
                        change = parse_change(record.value, channel)
                        if change is not None:
                            parsed.append((record.partition, record.offset, change))
                for target in self.targets:
                    await self._ingest(target, by_channel[target.config.channel])
                for tp, batch in batches.items():
                    if batch:
                        self.position[tp.partition] = batch[-1].offset + 1
            now = time.monotonic()
            if now - last_report >= self.settings.push_status_interval:
                last_report = now
                await self.commit()
                await self.report()
            freeze = self.settings.gc_freeze_interval
            if freeze and now - last_freeze >= freeze:
                # The levels' state is long-lived: out of full collections, whose pauses
                # over a large catalogue are what a change waits for (as in the worker).
                last_freeze = now
                gc.freeze()

    async def _ingest(
        self, target: PushTarget, changes: Sequence[tuple[int, int, FeedChange]]
    ) -> None:
        """Hand the changes over; while Redis cannot be reached, keep trying (the
        records are not committed, and this process holds them meanwhile)."""
        while True:
            try:
                await target.ingest(changes)
                return
            except (RedisError, OSError) as exc:
                log.error("push: Redis cannot be reached (%s); retrying in 1 s", exc)
                await asyncio.sleep(1.0)

    def safe_offsets(self) -> dict[int, int]:
        """Per partition read, the offset below which every record's figures are in
        every running target's shop (or were decided to be there already)."""
        safe = dict(self.position)
        for target in self.targets:
            for partition, first in target.levels.first_offsets().items():
                if partition in safe and first < safe[partition]:
                    safe[partition] = first
        return safe

    async def commit(self, only: set[int] | None = None) -> None:
        if self.consumer is None:
            return
        assigned = {tp.partition for tp in self.consumer.assignment()}
        offsets = {
            TopicPartition(self.topic, p): OffsetAndMetadata(o, "")
            for p, o in self.safe_offsets().items()
            if p in assigned and (only is None or p in only) and o > self.committed.get(p, -1)
        }
        if not offsets:
            return
        await self.consumer.commit(offsets)
        for tp, meta in offsets.items():
            self.committed[tp.partition] = meta.offset

    async def revoked(self, partitions: set[int]) -> None:
        """Before the partitions move: commit what is safe, forget their pending
        figures (the next owner reads them again from the committed offset)."""
        with contextlib.suppress(Exception):
            await self.commit(partitions)
        for target in self.targets:
            target.levels.drop_partitions(partitions)
        for partition in partitions:
            self.position.pop(partition, None)
            self.committed.pop(partition, None)
        log.info("push: partitions %s revoked", sorted(partitions))

    async def report(self) -> None:
        assert self.consumer is not None
        lag_total = 0
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            position = self.position.get(tp.partition)
            if highwater is None or position is None:
                continue
            lag = max(0, highwater - position)
            lag_total += lag
            self.metrics.feed_lag.labels(str(tp.partition)).set(lag)
        statuses: dict[str, Any] = {}
        for target in self.targets:
            status = target.status()
            status.update(replica=self.replica, at=time.time(), feed_lag=lag_total)
            statuses[target.name] = status
        try:
            await report_status(self.redis, self.settings.redis_key_prefix, self.replica, statuses)
        except OSError as exc:
            log.warning("push: status report failed: %s", exc)

    async def _drain(self, writers: Sequence[asyncio.Task[None]]) -> None:
        """Let calls under way finish (their answers are recorded), then stop."""
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while any(t.levels.in_flight for t in self.targets) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for writer in writers:
            writer.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
