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
from datetime import UTC, datetime
from typing import Any

import orjson

from availability.ats import SkuAvailability
from infra.redis_client import REDIS_FAILURES
from infra.store import AvailabilityStore

log = logging.getLogger(__name__)

#: Records published per round; the next round starts when the broker has them all.
PUBLISH_BATCH = 2000
#: Seconds between attempts while the broker refuses the feed's records.
RETRY_DELAY = 1.0

# Sends (sku, value) records, keyed and partitioned by the SKU, in order; returns the
# broker's acks.
SendAll = Callable[[Sequence[tuple[str, bytes]]], Awaitable[Sequence[Awaitable[Any]]]]
Change = tuple[str, int, bytes]  # sku, version, the record's JSON


def format_computed_at(computed_at: int) -> str:
    """``computed_at`` (µs since the epoch) as RFC 3339 UTC with microseconds."""
    stamp = datetime.fromtimestamp(computed_at / 1_000_000, UTC)
    return stamp.isoformat(timespec="microseconds").replace("+00:00", "Z")


def change_record(availability: SkuAvailability, version: int, computed_at: int | str) -> bytes:
    """The feed's JSON value for a record at ``version`` (``computed_at`` in µs, or
    already formatted by ``format_computed_at``)."""
    locations = []
    total = 0
    for loc in availability.locations:
        ats = loc.on_hand - loc.reserved - loc.safety_stock  # with buffer 0
        if ats < 0:
            ats = 0
        total += ats
        locations.append(
            {
                "location_id": loc.location_id,
                "on_hand": loc.on_hand,
                "reserved": loc.reserved,
                "in_transit": loc.in_transit,
                "damaged": loc.damaged,
                "safety_stock": loc.safety_stock,
                "buffers": dict(sorted(loc.channel_buffers.items())) if loc.channel_buffers else {},
                "ats": ats,
            }
        )
    if not isinstance(computed_at, str):
        computed_at = format_computed_at(computed_at)
    return orjson.dumps(
        {
            "sku": availability.sku,
            "version": version,
            "computed_at": computed_at,
            "ats": total,
            "locations": locations,
        }
    )


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
