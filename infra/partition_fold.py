"""Folding one partition of a topic from its start, in the background: what the rules
log and the audit trail's reader share.

``position`` is the next offset to fold; ``sync`` waits until everything written so
far is folded, so a process reads its own writes (and its peers'). A fetch that
fails (the broker went away) is retried every second; ``failure`` holds the last
one until a fetch succeeds again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.config import Settings
from infra.kafka import kafka_client_options

log = logging.getLogger(__name__)


class PartitionFold:
    """Subclasses fold each record in ``fold``; ``start`` and ``stop`` may be extended
    to add clients of their own (call the base first / last)."""

    def __init__(self, settings: Settings, topic: str, name: str) -> None:
        self.settings = settings
        self.name = name
        self.position = 0
        self.failure: BaseException | None = None
        self._tp = TopicPartition(topic, 0)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._advanced = asyncio.Condition()

    async def fold(self, record: Any) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            **kafka_client_options(self.settings),
            enable_auto_commit=False,
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
            client_id=f"{self.settings.faust_app_id}-{self.name}",
        )
        await self._consumer.start()
        self._consumer.assign([self._tp])
        await self._consumer.seek_to_beginning(self._tp)
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(self._tp, timeout_ms=1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker went away: keep trying
                self.failure = exc
                log.warning("%s: fetch failed: %s", self.name, exc)
                await asyncio.sleep(1.0)
                continue
            self.failure = None
            for record in batches.get(self._tp, []):
                await self.fold(record)
                self.position = record.offset + 1
            async with self._advanced:
                self._advanced.notify_all()

    async def end_offset(self) -> int:
        assert self._consumer is not None
        offsets = await self._consumer.end_offsets([self._tp])
        return int(offsets[self._tp])

    async def wait_for(self, offset: int, timeout: float = 10.0) -> None:
        """Until every record before ``offset`` has been folded."""
        async with asyncio.timeout(timeout), self._advanced:
            await self._advanced.wait_for(lambda: self.position >= offset)

    async def sync(self, timeout: float = 10.0) -> None:
        """Catch up with everything written to the partition so far."""
        await self.wait_for(await self.end_offset(), timeout)

    async def wait_advanced(self, timeout: float) -> None:
        """Until the fold has moved on (or ``timeout`` seconds: TimeoutError)."""
        async with self._advanced:
            await asyncio.wait_for(self._advanced.wait(), timeout)
