"""The figures a ``WatchHub`` holds per watched SKU, kept up to date from the SKU's
announcements (README "Serving layer").

An announcement names only the locations that changed (``+``), or every location of
the SKU (``=``), always with the SKU's live holds; so the hub keeps each watched
SKU's folded figures at a version and merges a ``+`` that follows it (version + 1).
Anything else that is newer (a message lost, or one that arrived before the figures
were first read) is a gap: the SKU's record is read again (one read in flight per
SKU), the announcements that arrive meanwhile are kept, and those newer than the
read are applied after it, in version order; if a gap remains, it is read again.
Versions at or below the figures held are dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from availability.ats import SkuAvailability, merge_locations
from availability.holds import with_held
from infra.records import AnnouncedChange
from infra.redis_client import REDIS_FAILURES
from infra.serving_reads import FoldedRecord
from infra.store import AvailabilityStore

log = logging.getLogger(__name__)

#: (sku, version, what the record serves at that version: None when no record)
Deliver = Callable[[str, int, SkuAvailability | None], None]


@dataclass(slots=True)
class _Figures:
    version: int
    folded: SkuAvailability | None
    held: dict[str, int]

    def served(self) -> SkuAvailability | None:
        return None if self.folded is None else with_held(self.folded, self.held)


class WatchedFigures:
    def __init__(self, store: AvailabilityStore, deliver: Deliver) -> None:
        self.store = store
        self._deliver = deliver
        self._figures: dict[str, _Figures] = {}
        # SKU -> announcements kept while its record is read again
        self._waiting: dict[str, list[AnnouncedChange]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.rereads = 0  # gaps closed by reading the record again

    def forget(self, sku: str) -> None:
        """Nobody watches ``sku`` any more."""
        self._figures.pop(sku, None)

    def forget_all(self) -> None:
        self._figures.clear()

    def current(self, sku: str) -> tuple[int, SkuAvailability | None]:
        figures = self._figures.get(sku)
        return (0, None) if figures is None else (figures.version, figures.served())

    def seed(self, sku: str, record: FoldedRecord) -> tuple[int, SkuAvailability | None]:
        """The record as a watch read it once subscribed; returns what the hub holds
        now (that record, or newer figures it already had)."""
        held = self._figures.get(sku)
        if held is None or record.version > held.version:
            self._figures[sku] = _Figures(record.version, record.folded, record.held)
        return self.current(sku)

    def announce(self, sku: str, change: AnnouncedChange) -> None:
        waiting = self._waiting.get(sku)
        if waiting is not None:
            waiting.append(change)  # applied once the record is read again
            return
        if not self._apply(sku, change):
            self._reread(sku, [change])

    def _apply(self, sku: str, change: AnnouncedChange) -> bool:
        """Apply ``change`` if it follows the figures held (or replaces them); False
        for a gap."""
        held = self._figures.get(sku)
        if held is None:
            return True  # not watched (yet: the first read is still to come)
        if change.version <= held.version:
            return True  # already in the figures
        if change.whole:
            folded = merge_locations(None, sku, True, change.changed)
        elif held.folded is not None and change.version == held.version + 1:
            folded = merge_locations(held.folded, sku, False, change.changed, change.removed)
        else:
            return False
        self._take(sku, _Figures(change.version, folded, change.held), deliver=True)
        return True

    def _take(self, sku: str, figures: _Figures, deliver: bool) -> None:
        held = self._figures.get(sku)
        if held is not None and figures.version <= held.version:
            return
        self._figures[sku] = figures
        if deliver:
            self._deliver(sku, figures.version, figures.served())

    def _reread(self, sku: str, waiting: list[AnnouncedChange]) -> None:
        self._waiting[sku] = waiting
        task = asyncio.get_running_loop().create_task(self._read_again(sku))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_again(self, sku: str) -> None:
        try:
            while True:
                try:
                    [record] = await self.store.read_folded([sku])
                except REDIS_FAILURES as exc:
                    # The watches go on; the next announcement of a gap reads again.
                    log.warning("watch hub: reading %s after a gap failed: %r", sku, exc)
                    return
                self.rereads += 1
                if sku in self._figures:  # still watched
                    self._take(
                        sku, _Figures(record.version, record.folded, record.held), deliver=True
                    )
                waiting = sorted(self._waiting.get(sku, []), key=lambda c: c.version)
                self._waiting[sku] = []
                if all(self._apply(sku, change) for change in waiting):
                    return
        finally:
            self._waiting.pop(sku, None)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
