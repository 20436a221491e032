"""The durable change feed: every change of a serving record, on ``availability.changes``.

A serving record's write (``AvailabilityStore.write_encoded``) returns the version
the feed must carry; ``ServingWriter`` hands each such (SKU, version, the locations
that changed) here, in write order, and ``ChangeFeed.run`` publishes one record per
location, keyed ``<sku> <location_id>`` and sent to the SKU's partition, so a SKU's
changes stay in order and a compacted topic keeps every location's latest. Once the
broker acknowledges a batch its versions are marked in Redis (field ``f``).

Nothing is lost in a crash: a version written to Redis but never acknowledged by
the feed stays above ``f``; after a restart the worker rewrites every SKU it owns
whole, the write script answers "unchanged, but the feed still needs version v", and
every location of the SKU is published again at v. The feed is therefore at least
once: a consumer applies a record only when its version is greater than the last
one it applied for that SKU and location, which also discards the rare stale
duplicate that a rebalance can produce.

The reservation API is the feed's second producer: a hold it places or removes bumps
the same per-SKU version (``infra.reservation_store``) and it publishes the records
of the held figures itself, before it answers. The figures a version stands for are
what the record serves (the folded figures with the live holds counted as
reserved), whoever publishes them; a record of the API's may reach the partition
after a worker's of a higher version, which the version rule discards. The worker
also republishes a line's location when it looks at a reservation line again
(``streams.hold_sweep``), which repairs a record the API never got out.

Record format (JSON; README "Change feed"):

    {"sku": "SKU-1", "location_id": "S1", "version": 1795420800000002,
     "computed_at": "2026-11-23T10:00:00.123456Z", "on_hand": 10, "reserved": 2,
     "in_transit": 0, "damaged": 0, "safety_stock": 1, "buffers": {"pos": 2}, "ats": 7}

``ats`` is for a channel without a buffer; a channel's is
``max(0, on_hand - reserved - safety_stock - buffers.get(channel, 0))``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from availability.ats import LocationAvailability
from infra.feed_record import format_computed_at, location_record, record_key
from infra.redis_client import REDIS_FAILURES
from infra.store import AvailabilityStore

log = logging.getLogger(__name__)

#: Records (locations) published per round, at most (a change of more locations goes
#: alone); the next round starts when the broker has them all.
PUBLISH_BATCH = 2000
#: Seconds between attempts while the broker refuses the feed's records.
RETRY_DELAY = 1.0

# Sends (sku, key, value) records to the SKU's partition, in order; returns the
# broker's acks.
__all__ = ["ChangeFeed", "format_computed_at", "location_record"]

SendAll = Callable[[Sequence[tuple[str, bytes, bytes]]], Awaitable[Sequence[Awaitable[Any]]]]
Change = tuple[str, int, list[tuple[bytes, bytes]]]  # sku, version, (key, value) per location


class ChangeFeed:
    """An in-order outbox of record changes and the task that publishes it.

    ``send_all(records)`` puts (sku, key, value) records on the topic, in the SKU's
    partition, and returns awaitables that complete when the broker acknowledges
    them.
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
        # Per SKU, the version queued and not yet marked in Redis, and the locations
        # queued at it: a rewrite in between answers "the feed still needs v" and must
        # not queue them twice, while another location at v (the hold sweep's
        # republish) must still go.
        self._queued: dict[str, tuple[int, set[str]]] = {}
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

    def add(self, changes: Sequence[tuple[str, int, Sequence[LocationAvailability | str]]]) -> None:
        """Queue (sku, version, the served figures of the locations it changed; a str:
        a location the SKU no longer has)."""
        now = format_computed_at(self._clock())
        for sku, version, all_locations in changes:
            queued_version, queued = self._queued.get(sku, (0, set()))
            if queued_version > version:
                continue
            if queued_version < version:
                queued = set()
                self._queued[sku] = (version, queued)
            locations = [loc for loc in all_locations if _location_id(loc) not in queued]
            if not locations:
                continue
            queued.update(_location_id(loc) for loc in locations)
            self._outbox.append(
                (
                    sku,
                    version,
                    [
                        (
                            record_key(sku, _location_id(loc)),
                            location_record(sku, loc, version, now),
                        )
                        for loc in locations
                    ],
                )
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
            batch = self._next_batch()
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
                if self._queued.get(sku, (0, set()))[0] == version:
                    del self._queued[sku]
            if len(self._outbox) < self.max_pending:
                self._room.set()
            if not self._outbox:
                self._has_work.clear()
                self._idle.set()

    def _next_batch(self) -> list[Change]:
        """The oldest changes, up to ``PUBLISH_BATCH`` records (at least one change)."""
        records = 0
        taken = 0
        for _, _, pairs in self._outbox:
            if taken and records + len(pairs) > PUBLISH_BATCH:
                break
            records += len(pairs)
            taken += 1
        return self._outbox[:taken]

    async def _publish(self, batch: Sequence[Change]) -> list[Change]:
        """Send the batch; returns what was sent (and acknowledged)."""
        # A SKU this worker no longer owns is left unmarked: its owner publishes it, as
        # it rewrites every SKU it recovers (see the module docstring).
        sent = [change for change in batch if self._owns(change[0])]
        if sent:
            records = [(sku, key, value) for sku, _, pairs in sent for key, value in pairs]
            await asyncio.gather(*await self._send_all(records))
            self.published += len(records)
        return sent

    async def _mark(self, sent: Sequence[Change]) -> None:
        if not sent:
            return
        try:
            await self.store.mark_published((sku, version) for sku, version, _ in sent)
        except REDIS_FAILURES as exc:
            # Harmless: an unmarked version is published once more after a restart.
            log.warning("change feed: marking %d versions failed: %s", len(sent), exc)


def _location_id(location: LocationAvailability | str) -> str:
    return location if isinstance(location, str) else location.location_id
