"""Keeps the serving layer complete: rewrites records that Redis has lost.

Redis holds nothing that cannot be rebuilt: every serving record is computed from the
fold state and the rules, which live in Kafka. A Redis that was flushed, restarted
empty or replaced has lost the ``{prefix}:serving`` marks (``infra.store``) along
with the records. Each worker checks, every ``AVAILABILITY_HEARTBEAT_INTERVAL``,
that the partitions it owns are marked built; for those that are not, it rewrites
the records of their SKUs, a chunk at a time (the fold goes on between chunks), and
marks them built in the epoch it started in. Should Redis lose its data again during
the rebuild, the epoch is gone, the mark is refused, and the next check starts over.

Reads that find no record while the serving layer is incomplete answer "unavailable"
rather than "unknown SKU" (``AvailabilityStore.incomplete_serving_layer``); records
already rewritten are whole, current figures and are served as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from infra.redis_client import REDIS_FAILURES
from infra.store import AvailabilityStore
from streams.serving import ServingWriter

log = logging.getLogger(__name__)

#: SKUs marked per flush of a rebuild: small enough that the fold's own flushes get
#: their turn between chunks.
REBUILD_CHUNK = 2000
PROGRESS_LOG_INTERVAL = 5.0


class ServingRebuild:
    def __init__(
        self,
        store: AvailabilityStore,
        writer: ServingWriter,
        *,
        partitions: int,
        owned: Callable[[], frozenset[int]],
        skus_in: Callable[[frozenset[int]], list[str]],
    ) -> None:
        self.store = store
        self.writer = writer
        self.partitions = partitions
        self._owned = owned
        self._skus_in = skus_in
        self._forced: set[int] = set()
        self._wake = asyncio.Event()
        self.rebuilding: frozenset[int] = frozenset()
        self.rebuilds = 0
        self.records_rewritten = 0

    def force(self, partitions: Iterable[int]) -> None:
        """Rewrite these partitions' records at the next check, marked or not (a new
        assignment: Redis may hold records from before a crash)."""
        self._forced.update(partitions)
        self._wake.set()

    @property
    def pending(self) -> bool:
        """A rebuild is under way or asked for: the worker is not ready."""
        return bool(self.rebuilding) or bool(self._forced & self._owned())

    async def run(self, interval: float, when: Callable[[], bool]) -> None:
        """Check every ``interval`` seconds (at once after ``force``) while ``when()``
        holds: the state is recovered and no rebalance is under way."""
        while True:
            try:
                if when():
                    await self.check()
            except REDIS_FAILURES as exc:
                log.warning("serving layer check failed (%s); retrying", exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)

    async def check(self) -> None:
        owned = self._owned()
        if not owned:
            return
        layer = await self.store.serving_layer()
        todo = (owned - layer.built) | (self._forced & owned)
        if todo:
            await self.rebuild(frozenset(todo))

    async def rebuild(self, partitions: frozenset[int]) -> bool:
        """Rewrite every record of ``partitions``; True once they are marked built."""
        self.rebuilding = partitions
        try:
            epoch = await self.store.begin_rebuild(self.partitions)
            self._forced -= partitions
            skus = self._skus_in(partitions)
            log.info(
                "serving layer: rewriting the records of partitions %s (%d SKUs)",
                sorted(partitions),
                len(skus),
            )
            start = logged = time.monotonic()
            for first in range(0, len(skus), REBUILD_CHUNK):
                chunk = skus[first : first + REBUILD_CHUNK]
                self.writer.mark_recovered(chunk)
                if not await self.writer.flush():
                    self._forced |= partitions
                    log.warning("serving layer: rebuild interrupted by a Redis failure")
                    return False
                self.records_rewritten += len(chunk)
                if time.monotonic() - logged >= PROGRESS_LOG_INTERVAL:
                    logged = time.monotonic()
                    log.info(
                        "serving layer: %d of %d records rewritten",
                        min(first + REBUILD_CHUNK, len(skus)),
                        len(skus),
                    )
            if not await self.store.mark_built(epoch, partitions):
                log.warning("serving layer: Redis lost its data during the rebuild; again")
                return False
            self.rebuilds += 1
            log.info(
                "serving layer: partitions %s rebuilt, %d records in %.1f s",
                sorted(partitions),
                len(skus),
                time.monotonic() - start,
            )
            return True
        finally:
            self.rebuilding = frozenset()
