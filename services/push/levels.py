"""The levels of one target whose figure is not yet in the shop, coalesced per (SKU,
location) to the latest figure, and what they allow to be committed.

An entry remembers the earliest change-feed record that contributed to it (partition
and offset, and that record's ``computed_at`` as ``since``): the push commits a
partition only below the earliest such record of any entry, deferred, queued or under
way, so a restart reads every figure that is not in the shop yet again, with the same
``since`` (README "Shopify push": delivery).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

Key = tuple[str, str]  # (sku, location)


@dataclass(slots=True)
class Pending:
    sku: str
    location: str
    figure: int
    version: int
    computed_at: float
    since: float
    partition: int
    first_offset: int
    due: float = 0.0
    quantity: int = 0  # what a call under way sets

    @property
    def key(self) -> Key:
        return (self.sku, self.location)


class Levels:
    def __init__(self) -> None:
        self.queued: dict[Key, Pending] = {}
        self.in_flight: dict[Key, Pending] = {}
        self._heap: list[tuple[float, int, Key]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self.queued) + len(self.in_flight)

    def newest_version(self, key: Key) -> int:
        versions = [e.version for e in (self.queued.get(key), self.in_flight.get(key)) if e]
        return max(versions, default=0)

    def offer(
        self,
        sku: str,
        location: str,
        figure: int,
        version: int,
        computed_at: float,
        partition: int,
        offset: int,
    ) -> Pending:
        """The queued entry of the level, with this figure (the caller checked that the
        version is newer than anything held)."""
        key = (sku, location)
        entry = self.queued.get(key)
        if entry is None:
            entry = Pending(
                sku, location, figure, version, computed_at, computed_at, partition, offset
            )
            self.queued[key] = entry
        else:
            entry.figure, entry.version, entry.computed_at = figure, version, computed_at
        return entry

    def schedule(self, entry: Pending, due: float) -> None:
        entry.due = due
        heapq.heappush(self._heap, (due, next(self._seq), entry.key))

    def drop(self, key: Key) -> Pending | None:
        return self.queued.pop(key, None)

    def next_due(self) -> float | None:
        """When the earliest queued entry is due (None: nothing queued)."""
        while self._heap:
            due, _, key = self._heap[0]
            entry = self.queued.get(key)
            if entry is not None and entry.due == due and key not in self.in_flight:
                return due
            heapq.heappop(self._heap)
        return None

    def take_due(self, now: float, limit: int) -> list[Pending]:
        """Up to ``limit`` queued entries due by ``now`` (earliest first); they are
        removed from the queue (the caller sends, requeues or settles them)."""
        taken: list[Pending] = []
        while self._heap and len(taken) < limit:
            due, _, key = self._heap[0]
            if due > now:
                break
            heapq.heappop(self._heap)
            entry = self.queued.get(key)
            if entry is None or entry.due != due or key in self.in_flight:
                continue
            del self.queued[key]
            taken.append(entry)
        return taken

    def requeue(self, entry: Pending, due: float) -> None:
        """Back in the queue (a call failed for it); a newer figure that arrived
        meanwhile wins, keeping the earliest record and ``since``."""
        newer = self.queued.get(entry.key)
        if newer is not None:
            newer.since = min(newer.since, entry.since)
            if (newer.partition, newer.first_offset) > (entry.partition, entry.first_offset):
                newer.first_offset = entry.first_offset
            entry = newer
        self.queued[entry.key] = entry
        self.schedule(entry, min(due, entry.due) if newer is not None else due)

    def start(self, entries: Iterable[Pending]) -> None:
        for entry in entries:
            self.in_flight[entry.key] = entry

    def finish(self, entries: Iterable[Pending]) -> None:
        for entry in entries:
            if self.in_flight.get(entry.key) is entry:
                del self.in_flight[entry.key]

    def all(self) -> Iterator[Pending]:
        yield from self.queued.values()
        yield from self.in_flight.values()

    def first_offsets(self) -> dict[int, int]:
        """Per partition, the earliest record an entry still needs."""
        firsts: dict[int, int] = {}
        for entry in self.all():
            seen = firsts.get(entry.partition)
            if seen is None or entry.first_offset < seen:
                firsts[entry.partition] = entry.first_offset
        return firsts

    def drop_partitions(self, partitions: set[int]) -> int:
        gone = [k for k, e in self.queued.items() if e.partition in partitions]
        for key in gone:
            del self.queued[key]
        return len(gone)

    def clear(self) -> int:
        count = len(self.queued)
        self.queued.clear()
        self._heap.clear()
        return count

    def oldest_since(self) -> float | None:
        return min((e.since for e in self.all()), default=None)

    def reschedule_all(self, due_of: Callable[[Pending], float | None]) -> list[Pending]:
        """Every queued entry's due time again (a policy changed); returns the entries
        that no longer need a push (removed)."""
        self._heap.clear()
        settled = []
        for entry in list(self.queued.values()):
            due = due_of(entry)
            if due is None:
                del self.queued[entry.key]
                settled.append(entry)
            else:
                self.schedule(entry, due)
        return settled
