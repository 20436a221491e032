"""The durable change feed: every change of a serving record, on ``availability.changes``.

A serving record's write (``AvailabilityStore.write_records``) returns the version
the feed must carry; ``ServingWriter`` hands each such (record, version) here, in
write order, and ``ChangeFeed.run`` publishes them to the topic, keyed and
partitioned by SKU, so a SKU's changes stay in order. Once the broker acknowledges
a batch its versions are marked in Redis (field ``f``).

Nothing is lost in a crash: a version written to Redis but never acknowledged by
the feed stays above ``f``; after a restart the worker rewrites every SKU it owns,
the write script answers "unchanged, but the feed still needs version v", and v is
published again. The feed is therefore at least once: a consumer applies a record
only when its version is greater than the last one it applied for that SKU, which
also discards the rare stale duplicate that a rebalance can produce.

The reservation API is the feed's second producer: a hold it places or removes bumps
the same per-SKU version (``infra.reservation_store``) and it publishes the record
of the held figures itself, before it answers. The figures a version stands for are
what the record serves (the folded figures with the live holds counted as
reserved), whoever publishes them; a record of the API's may reach the partition
after a worker's of a higher version, which the version rule discards. The worker
also republishes a SKU's current figures when it looks at a reservation line again
(``streams.hold_sweep``), which repairs a record the API never got out.

Record format (JSON; README "Change feed"):

    {"sku": "SKU-1", "version": 1795420800000002,
     "computed_at": "2026-11-23T10:00:00.123456Z",
     "ats": 7,
     "locations": [{"location_id": "S1", "on_hand": 10, "reserved": 2,
                    "in_transit": 0, "damaged": 0, "safety_stock": 1,
                    "buffers": {"pos": 2}, "ats": 7}]}

``ats`` is for a channel without a buffer; a channel's is
``max(0, on_hand - reserved - safety_stock - buffers.get(channel, 0))`` per location.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from availability.ats import SkuAvailability
from infra.feed_record import change_record, format_computed_at
from infra.redis_client import REDIS_FAILURES
from infra.store import AvailabilityStore

log = logging.getLogger(__name__)

#: Records published per round; the next round starts when the broker has them all.
PUBLISH_BATCH = 2000
#: Seconds between attempts while the broker refuses the feed's records.
RETRY_DELAY = 1.0

# Sends (sku, value) records, keyed and partitioned by the SKU, in order; returns the
# broker's acks.
__all__ = ["ChangeFeed", "change_record", "format_computed_at"]

SendAll = Callable[[Sequence[tuple[str, bytes]]], Awaitable[Sequence[Awaitable[Any]]]]
Change = tuple[str, int, bytes]  # sku, version, the record's JSON


class ChangeFeed:
    """An in-order outbox of record changes and the task that publishes it.

    ``send_all(records)`` puts (sku, value) records on the topic, keyed and
    partitioned by the SKU, and returns awaitables that complete when the broker
    acknowledges them.
    """

    def __init__(
        self,
        store: AvailabilityStore,
        send_all: SendAll,
        owns: Callable[[str], bool],
        clock: Callable[[], int],
        max_pending: int = 50_000,
    ) -> None:
        self.store = store
        self._send_all = send_all
        self._owns = owns
        self._clock = clock
        self.max_pending = max_pending
        self._outbox: list[Change] = []
        # Versions queued and not yet marked in Redis: a rewrite in between answers
        # "the feed still needs v" and must not queue v twice.
        self._queued: dict[str, int] = {}
        self._has_work = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.published = 0
        self.errors = 0

    @property
    def pending(self) -> int:
        return len(self._outbox)

    def add(self, changes: Sequence[tuple[SkuAvailability, int]]) -> None:
        now = format_computed_at(self._clock())
        for availability, version in changes:
            if self._queued.get(availability.sku, 0) >= version:
                continue
            self._queued[availability.sku] = version
            self._outbox.append(
                (availability.sku, version, change_record(availability, version, now))
            )
        if self._outbox:
            self._idle.clear()
            self._has_work.set()
            if len(self._outbox) >= self.max_pending:
                self._room.clear()

    async def wait_room(self) -> None:
        """Return once the outbox is below ``max_pending`` (back-pressure on writes)."""
        await self._room.wait()

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until everything queued is published."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def run(self) -> None:
        while True:
            await self._has_work.wait()
            batch = self._outbox[:PUBLISH_BATCH]
            try:
                sent = await self._publish(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker is away: keep the order, try again
                self.errors += 1
                log.error(
                    "change feed: publishing %d records failed (%s); retrying in %.0f s",
                    len(batch),
                    exc,
                    RETRY_DELAY,
                )
                await asyncio.sleep(RETRY_DELAY)
                continue
            del self._outbox[: len(batch)]
            await self._mark(sent)
            for sku, version, _ in batch:
                if self._queued.get(sku) == version:
                    del self._queued[sku]
            if len(self._outbox) < self.max_pending:
                self._room.set()
            if not self._outbox:
                self._has_work.clear()
                self._idle.set()

    async def _publish(self, batch: Sequence[Change]) -> list[Change]:
        """Send the batch; returns what was sent (and acknowledged)."""
        # A SKU this worker no longer owns is left unmarked: its owner publishes it, as
        # it rewrites every SKU it recovers (see the module docstring).
        sent = [change for change in batch if self._owns(change[0])]
        if sent:
            await asyncio.gather(*await self._send_all([(c[0], c[2]) for c in sent]))
        self.published += len(sent)
        return sent

    async def _mark(self, sent: Sequence[Change]) -> None:
        if not sent:
            return
        try:
            await self.store.mark_published((sku, version) for sku, version, _ in sent)
        except REDIS_FAILURES as exc:
            # Harmless: an unmarked version is published once more after a restart.
            log.warning("change feed: marking %d versions failed: %s", len(sent), exc)
