"""Keeps the Redis serving records in step with the fold state.

SKUs are marked dirty (by the fold, a rule change, a reservation expiring or a
recovery) and ``flush`` writes their records. A record is computed when it is
flushed, from the state and rules of that moment, and flushes never overlap, so
the last write for a SKU always carries its latest figures. Each write that the
change feed must carry is handed to it (``streams.change_feed``) in write order.

Reservation holds (README "Reservations") are handed over by the writes: the fold
notes the reservation ids of the lines it folded (``note_folded``), and the write of
the SKU's record that first includes them removes their holds in the same Redis step
(``AvailabilityStore.write_encoded``), so no line counts twice and none drops out.
Ids noted while a flush is under way wait for the next one, which computes its
records after they were folded; a failed write keeps them for its retry. A worker
that starts (or takes over partitions) has noted nothing: its rebuild writes
(``mark_recovered``) hand over every line of the SKU recent enough that a hold of it
may still live (``handover_horizon``).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable, Iterable

from availability.ats import SkuAvailability, build_availability
from availability.holds import with_held
from availability.rules import RuleBook
from availability.state import SkuState
from infra.records import encode_record
from infra.redis_client import REDIS_FAILURES
from infra.store import AvailabilityStore
from streams.change_feed import ChangeFeed

log = logging.getLogger(__name__)

WRITE_CHUNK = 500


def now_micros() -> int:
    return time.time_ns() // 1000


class ServingWriter:
    def __init__(
        self,
        store: AvailabilityStore,
        rules: Callable[[], RuleBook],
        state_of: Callable[[str], SkuState | None],
        owns: Callable[[str], bool],
        feed: ChangeFeed | None = None,
        clock: Callable[[], int] = now_micros,
        handover_horizon: int = 0,
    ) -> None:
        self.store = store
        self.feed = feed
        self._rules = rules
        self._state_of = state_of
        self._owns = owns
        self._clock = clock
        self._dirty: set[str] = set()
        self._expiries: list[tuple[int, str]] = []
        self._scheduled: dict[str, int] = {}  # earliest expiry queued per SKU
        self._lock = asyncio.Lock()
        self.rules_ready = asyncio.Event()
        self.writes = 0
        self.errors = 0
        self.record_errors = 0  # records that could not be computed
        self._failed: set[str] = set()  # SKUs logged for that (once each)
        # SKU -> reservation ids folded since its record was last written
        self._folded_lines: dict[str, set[str]] = {}
        self._recovered: set[str] = set()  # SKUs whose next write follows a recovery
        # µs: a line whose latest event is older than this can have no live hold
        self._handover_horizon = handover_horizon
        self.handed_over = 0  # holds handed over to the records written
        self.holds_expired = 0  # holds found past their deadline (never handed over)

    def note_folded(self, sku: str, reservation_ids: Iterable[str]) -> None:
        """The fold now includes these reservation lines of ``sku``: their holds go
        with the next write of its record (which ``mark`` must ask for)."""
        self._folded_lines.setdefault(sku, set()).update(reservation_ids)

    def mark(self, skus: Iterable[str]) -> None:
        self._dirty.update(skus)

    def mark_recovered(self, skus: Iterable[str]) -> None:
        """Mark SKUs whose state was recovered (not folded here): their next write
        hands over the holds of all their recent reservation lines."""
        skus = list(skus)
        self._dirty.update(skus)
        self._recovered.update(skus)

    @property
    def pending(self) -> int:
        return len(self._dirty)

    def mark_expired(self) -> None:
        """Mark SKUs whose next reservation expiry has come."""
        now = self._clock()
        while self._expiries and self._expiries[0][0] <= now:
            when, sku = heapq.heappop(self._expiries)
            if self._scheduled.get(sku) == when:
                del self._scheduled[sku]
            self._dirty.add(sku)

    async def flush(self) -> bool:
        """Write every dirty SKU; False if Redis failed (they stay dirty)."""
        await self.rules_ready.wait()
        async with self._lock:
            if not self._dirty:
                return True
            skus, self._dirty = self._dirty, set()
            # Taken with the records, before any await: a write hands over only lines
            # that the state it was computed from includes.
            lines = {sku: self._folded_lines.pop(sku) for sku in skus if sku in self._folded_lines}
            recovered, self._recovered = self._recovered & skus, self._recovered - skus
            self._recent_lines(recovered, lines)
            built = self._build(skus)
            records = [record for record, _ in built]
            try:
                for start in range(0, len(built), WRITE_CHUNK):
                    chunk = built[start : start + WRITE_CHUNK]
                    if self.feed is not None:
                        await self.feed.wait_room()
                    handing = {r.sku: lines[r.sku] for r, _ in chunk if r.sku in lines}
                    versions, holds, held = await self.store.write_encoded(
                        [(record.sku, encoded) for record, encoded in chunk],
                        self._clock(),
                        handing,
                    )
                    for sku in handing:
                        del lines[sku]
                    self.handed_over += holds.handed_over
                    self.holds_expired += holds.expired
                    if self.feed is not None:
                        # The feed carries what the record serves at that version:
                        # the figures with the holds still live counted as reserved.
                        self.feed.add(
                            [
                                (with_held(r, h), v)
                                for (r, _), v, h in zip(chunk, versions, held, strict=True)
                                if v
                            ]
                        )
            except REDIS_FAILURES as exc:
                self.errors += 1
                self._dirty |= skus
                for sku, ids in lines.items():
                    self.note_folded(sku, ids)
                log.error("serving layer: writing %d records failed: %s", len(records), exc)
                return False
            self.writes += len(records)
            return True

    def _recent_lines(self, skus: Iterable[str], lines: dict[str, set[str]]) -> None:
        since = self._clock() - self._handover_horizon
        for sku in skus:
            state = self._state_of(sku)
            if state is None:
                continue
            recent = {
                rid for rid, line in state.reservations.items() if line.last_event_at() >= since
            }
            if recent:
                lines.setdefault(sku, set()).update(recent)

    def _build(self, skus: Iterable[str]) -> list[tuple[SkuAvailability, list[bytes]]]:
        """The records of ``skus``, computed and encoded. A SKU whose record cannot be
        computed (a bug, not bad input) is left out, counted and logged once; it is
        not retried until its state changes again, so that it never holds up the
        others' writes."""
        now = self._clock()
        rules = self._rules()
        records = []
        for sku in skus:
            if not self._owns(sku):
                continue
            state = self._state_of(sku)
            if state is None:
                continue
            try:
                record = build_availability(state, rules, now)
                encoded = encode_record(record)
            except Exception:
                self.record_errors += 1
                if sku not in self._failed:
                    self._failed.add(sku)
                    log.exception("serving layer: the record of %s cannot be computed", sku)
                continue
            expiry = record.next_expiry
            if expiry is not None and expiry < self._scheduled.get(sku, expiry + 1):
                self._scheduled[sku] = expiry
                heapq.heappush(self._expiries, (expiry, sku))
            records.append((record, encoded))
        return records
