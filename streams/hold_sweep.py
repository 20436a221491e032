"""Looks again at the reservation lines the API noted (``infra.hold_checks``).

For each check that is due on a partition this worker owns: the SKU's holds past
their deadline are purged (the record's version bumped and the change announced,
so Watch shows the units free again), what the record serves at its current
version at the lines' locations (where their holds are or were, or where the fold
has them) and at those of the holds purged goes on the change feed (whether or not
the API's own feed record made it: a duplicate is discarded by the consumers'
version rule, and the record the feed ends those locations' changes with is then
one at the latest version), and the check moves to the deadline of the line's hold
while the hold lives, or is dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence

from infra.hold_checks import Check, HoldChecks
from infra.redis_client import REDIS_FAILURES
from streams.change_feed import ChangeFeed

log = logging.getLogger(__name__)

#: Checks taken per partition and round.
SWEEP_BATCH = 500


def now_millis() -> int:
    return time.time_ns() // 1_000_000


class HoldSweep:
    def __init__(
        self,
        checks: HoldChecks,
        feed: ChangeFeed | None,
        owned: Callable[[], frozenset[int]],
        owns: Callable[[str], bool],
        clock: Callable[[], int] = now_millis,
        line_locations: Callable[[str, Sequence[str]], Iterable[str]] = lambda sku, rids: (),
    ) -> None:
        self.checks = checks
        self.feed = feed
        self._owned = owned
        self._owns = owns
        self._clock = clock
        # (sku, reservation ids) -> where the fold has those lines' holds
        self._line_locations = line_locations
        self.checked = 0  # checks done
        self.expired = 0  # holds found past their deadline (never handed over)
        self.errors = 0

    async def sweep(self) -> int:
        """One round over the owned partitions; how many checks were done."""
        done = 0
        try:
            now = self._clock()
            due = await self.checks.due_in(self._owned(), now, SWEEP_BATCH)
            await self._look_at(due, now)
            done = len(due)
        except REDIS_FAILURES as exc:
            self.errors += 1
            log.warning("reservation holds: checking failed (retried): %s", exc)
        self.checked += done
        return done

    async def _look_at(self, due: list[Check], now: int) -> None:
        by_sku: dict[str, list[Check]] = {}
        for check in due:
            by_sku.setdefault(check.sku, []).append(check)
        for sku, checks in by_sku.items():
            if not self._owns(sku):
                continue  # a rebalance under way: the new owner looks at it
            rids = [check.reservation_id for check in checks]
            refreshed = await self.checks.refresh(sku, now, rids, self._line_locations(sku, rids))
            if refreshed is not None:
                self.expired += refreshed.expired
                if self.feed is not None and refreshed.served.locations:
                    self.feed.add([(sku, refreshed.version, list(refreshed.served.locations))])
            for check in checks:
                deadline = None if refreshed is None else refreshed.live.get(check.reservation_id)
                await self.checks.reschedule(check, deadline)
