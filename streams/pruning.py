"""Keeps the worker's state bounded: ``availability.horizon.prune`` over every owned SKU,
a chunk at a time, and the journal entries that make it durable.

It runs inside the fold's task (``Processor.process`` calls ``step`` before folding
a batch, and ``fold_windows`` while no event comes), not beside it: a SKU's journal
entries must reach its partition in the order its state changed, and two writers of
the same partition could interleave.
A chunk of ``CHUNK`` SKUs at most every ``INTERVAL`` seconds keeps the pause short;
a worker of 200,000 SKUs goes round them in under four minutes, which is nothing
next to a horizon of days. A SKU whose pruning fails is left as it was, logged
once and counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from availability.journal import prune_entries
from availability.state import SkuState
from streams.intake import Clock
from streams.kafka import OutgoingRecords

log = logging.getLogger(__name__)

CHUNK = 1000
INTERVAL = 1.0


class Pruner:
    def __init__(
        self,
        *,
        states: Callable[[], dict[str, SkuState]],
        home: Callable[[str], int],
        owned: Callable[[], frozenset[int]],
        ready: Callable[[], bool],
        chunk: int = CHUNK,
        interval: float = INTERVAL,
    ) -> None:
        self._states = states
        self._home = home
        self._owned = owned
        self._ready = ready
        self._chunk = chunk
        self.interval = interval
        self._queue: list[str] = []
        self._last = 0.0
        self.pruned = 0  # SKUs whose state changed
        self.entries = 0  # journal entries written for it
        self.errors = 0
        self._failed: set[str] = set()

    def step(self, clock: Clock, journal: OutgoingRecords, *, force: bool = False) -> int:
        """Prune the next chunk of SKUs if it is time; their entries go to ``journal``.
        Returns how many SKUs changed."""
        now = time.monotonic()
        if not force and (now - self._last < self.interval or not self._ready()):
            return 0
        self._last = now
        states = self._states()
        if not self._queue:
            self._queue = list(states)
        chunk, self._queue = self._queue[: self._chunk], self._queue[self._chunk :]
        owned = self._owned()
        changed = 0
        for sku in chunk:
            state = states.get(sku)
            if state is None:
                continue
            partition = self._home(sku)
            if partition not in owned:
                continue
            try:
                entries = prune_entries(
                    state, settle_before=clock.settle_before, forget_before=clock.forget_before
                )
            except Exception:
                self.errors += 1
                if sku not in self._failed:
                    self._failed.add(sku)
                    log.exception("pruning the state of %s failed; it is left as it was", sku)
                continue
            if entries is None:
                continue
            changed += 1
            for entry in entries:
                journal.add(partition, entry.key.encode(), entry.value)
            self.entries += len(entries)
        self.pruned += changed
        return changed
