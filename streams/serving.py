"""Keeps the Redis serving records in step with the fold state.

SKUs are marked dirty (by the fold, a rule change, a reservation expiring or a
recovery) and ``flush`` writes their records. A record is computed when it is
flushed, from the state and rules of that moment, and flushes never overlap, so
the last write for a SKU always carries its latest figures. Each write that the
change feed must carry is handed to it (``streams.change_feed``) in write order.

The fold marks the locations its events named (``availability.changes``), and only
those are computed, written and announced (a *partial* write): one sold unit at one
of a thousand stores costs one location. Rule changes and recoveries mark a SKU
*whole*, and so does a partial write that the record cannot take (no record yet, or a
buffered channel it does not know): it is written whole in the same flush.

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from availability.ats import (
    LocationAvailability,
    build_availability,
    location_availability,
)
from availability.rules import RuleBook
from availability.state import SkuState
from infra.records import RecordWrite, encode_partial, encode_whole
from infra.redis_client import REDIS_FAILURES
from infra.store import AvailabilityStore, WriteReply
from streams.change_feed import ChangeFeed

log = logging.getLogger(__name__)

WRITE_CHUNK = 500

#: What is dirty of a SKU: these locations, or None for the whole SKU.
Dirt = set[str] | None


@dataclass(frozen=True, slots=True)
class _Built:
    """A record computed for writing: the locations it covers (all of them when
    whole; a str is a location the SKU no longer has) and its encoding."""

    sku: str
    locations: list[LocationAvailability | str]
    write: RecordWrite


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
        self._dirty: dict[str, Dirt] = {}
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
        """Mark SKUs to be written whole."""
        for sku in skus:
            self._dirty[sku] = None

    def mark_locations(self, changes: Mapping[str, Dirt]) -> None:
        """Mark these locations of each SKU (None: the whole SKU)."""
        dirty = self._dirty
        for sku, locations in changes.items():
            if sku in dirty:
                marked = dirty[sku]
                if marked is not None:
                    if locations is None:
                        dirty[sku] = None
                    else:
                        marked.update(locations)
            else:
                dirty[sku] = None if locations is None else set(locations)

    def mark_recovered(self, skus: Iterable[str]) -> None:
        """Mark SKUs whose state was recovered (not folded here): their next write
        (whole) hands over the holds of all their recent reservation lines."""
        skus = list(skus)
        self.mark(skus)
        self._recovered.update(skus)

    @property
    def pending(self) -> int:
        return len(self._dirty)

    def mark_expired(self) -> None:
        """Mark the locations of the reservation lines whose expiry has come: those
        expiring from the time scheduled (the SKU's earliest expiry when its record
        was last computed) until now."""
        now = self._clock()
        while self._expiries and self._expiries[0][0] <= now:
            when, sku = heapq.heappop(self._expiries)
            if self._scheduled.get(sku) == when:
                del self._scheduled[sku]
            state = self._state_of(sku)
            if state is None:
                continue
            expired = {
                hold.location_id
                for hold in state.expiring.values()
                if hold.expires_at is not None and when <= hold.expires_at <= now
            }
            if expired:
                self.mark_locations({sku: expired})

    async def flush(self) -> bool:
        """Write every dirty SKU; False if Redis failed (they stay dirty)."""
        await self.rules_ready.wait()
        async with self._lock:
            if not self._dirty:
                return True
            dirty, self._dirty = self._dirty, {}
            skus = set(dirty)
            # Taken with the records, before any await: a write hands over only lines
            # that the state it was computed from includes.
            lines = {sku: self._folded_lines.pop(sku) for sku in skus if sku in self._folded_lines}
            recovered, self._recovered = self._recovered & skus, self._recovered - skus
            self._recent_lines(recovered, lines)
            built = self._build(dirty)
            whole_again: list[str] = []
            written = 0
            try:
                while built:
                    whole_again = []
                    for start in range(0, len(built), WRITE_CHUNK):
                        chunk = built[start : start + WRITE_CHUNK]
                        if self.feed is not None:
                            await self.feed.wait_room()
                        handing = {b.sku: lines[b.sku] for b in chunk if b.sku in lines}
                        replies, holds = await self.store.write_encoded(
                            [b.write for b in chunk], self._clock(), handing
                        )
                        self.handed_over += holds.handed_over
                        self.holds_expired += holds.expired
                        changes = []
                        for record, reply in zip(chunk, replies, strict=True):
                            if reply.need_full:  # nothing written, no hold handed over
                                whole_again.append(record.sku)
                                continue
                            lines.pop(record.sku, None)
                            written += 1
                            if reply.version:
                                changes.append(
                                    (record.sku, reply.version, self._served(record, reply))
                                )
                        if self.feed is not None and changes:
                            # The feed carries what the record serves at that version:
                            # the figures with the holds still live counted as reserved.
                            self.feed.add(changes)
                    built = self._build(dict.fromkeys(whole_again))
            except REDIS_FAILURES as exc:
                self.errors += 1
                self.mark_locations(dirty)
                self.mark(whole_again)
                for sku, ids in lines.items():
                    self.note_folded(sku, ids)
                log.error("serving layer: writing %d records failed: %s", len(dirty), exc)
                return False
            self.writes += written
            return True

    def _served(self, record: _Built, reply: WriteReply) -> list[LocationAvailability | str]:
        """What the record serves, for the change feed, at the locations the write
        changed: those it was given, and those of holds it handed over or purged
        (their figures taken from the state now)."""
        locations = list(record.locations)
        covered = {loc if isinstance(loc, str) else loc.location_id for loc in locations}
        extra = [loc for loc in reply.touched if loc not in covered]
        state = self._state_of(record.sku) if extra else None
        if state is not None:
            more, _ = location_availability(state, self._rules(), self._clock(), extra)
            locations.extend(more)
        held = reply.held
        if not held:
            return locations
        return [
            loc
            if isinstance(loc, str) or loc.location_id not in held
            else replace(loc, reserved=loc.reserved + held[loc.location_id])
            for loc in locations
        ]

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

    def _build(self, dirty: Mapping[str, Dirt]) -> list[_Built]:
        """The records of the dirty SKUs, computed and encoded: whole, or only the
        locations marked. A SKU whose record cannot be computed (a bug, not bad
        input) is left out, counted and logged once; it is not retried until its
        state changes again, so that it never holds up the others' writes."""
        now = self._clock()
        rules = self._rules()
        records = []
        for sku, marked in dirty.items():
            if not self._owns(sku):
                continue
            state = self._state_of(sku)
            if state is None:
                continue
            try:
                if marked is None:
                    whole = build_availability(state, rules, now)
                    expiry = whole.next_expiry
                    built = _Built(sku, list(whole.locations), encode_whole(whole))
                else:
                    located, expiry = location_availability(state, rules, now, marked)
                    built = _Built(sku, located, encode_partial(sku, located))
            except Exception:
                self.record_errors += 1
                if sku not in self._failed:
                    self._failed.add(sku)
                    log.exception("serving layer: the record of %s cannot be computed", sku)
                continue
            if expiry is not None and expiry < self._scheduled.get(sku, expiry + 1):
                self._scheduled[sku] = expiry
                heapq.heappush(self._expiries, (expiry, sku))
            records.append(built)
        return records
