"""Where the worker stands in each input partition: offsets processed, skipped
ranges read directly, lag from the committed offsets, partitions left paused.

Faust's consumer can skip offsets (records it had fetched, dropped when a rebalance
starts while it delivers them, then committed past) and can leave partitions
paused after a recovery it believes stale; both are noticed and repaired here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

import faust
from faust.types import TP

from infra.config import Settings
from infra.kafka import CommittedOffsets, RangeReader
from streams.faust_internals import committed_offsets, paused_partitions, set_committed_offset

log = logging.getLogger(__name__)


class PartitionProgress:
    """Per input partition of one worker's consumer (``topics``)."""

    def __init__(self, settings: Settings, app: faust.App, topics: Iterable[str]) -> None:
        self.settings = settings
        self.app = app
        self.topics = frozenset(topics)
        #: Next offset to process per partition, since its assignment.
        self.processed: dict[TP, int] = {}
        self._paused_seen: set[TP] = set()
        self.committed_by_partition: dict[str, int] = {}
        self.gap_reader = RangeReader(settings, f"{settings.faust_app_id}-gaps")
        self.committed_reader = CommittedOffsets(settings, settings.faust_app_id)
        self.gap_timeouts = 0
        self.gap_offsets_lost = 0

    async def close(self) -> None:
        await self.gap_reader.close()
        await self.committed_reader.close()

    def waiting_events(self) -> int:
        """Events in the input partitions beyond those processed (gathered ones too)."""
        consumer = self.app.consumer
        waiting = 0
        for tp, done in self.processed.items():
            highwater = consumer.highwater(tp)
            if highwater is not None and highwater > done:
                waiting += highwater - done
        return waiting

    async def learn_committed(self, tp: TP) -> None:
        """Faust sometimes starts an assignment without the committed offsets it
        seeked to (its note is None): it then commits one offset at a time, and the
        gap before the first record goes unseen. The broker's is put in its place."""
        consumer = self.app.consumer
        if committed_offsets(consumer).get(tp) is not None:
            return
        offset = await self.committed_reader.committed(tp.topic, tp.partition)
        if offset is not None:
            set_committed_offset(consumer, tp, offset)

    def track_offset(self, tp: TP, offset: int, gaps: dict[TP, tuple[int, int]]) -> None:
        """Note ``offset`` as processed; record a forward jump in ``gaps``.

        The offsets of our input topics have no holes, but Faust's consumer can drop
        records it had fetched when a rebalance starts while it delivers them, and
        then treat their offsets as a gap that it commits past. ``process`` reads
        such a range itself (``RangeReader``) and folds it with the batch: the fold
        does not depend on order, and ignores events it has already seen.
        """
        expected = self.processed.get(tp)
        if expected is None:
            # First record since the assignment: it should be the one at the committed
            # offset that Faust positioned the partition at.
            expected = committed_offsets(self.app.consumer).get(tp)
            log.info(
                "resuming %s[%d] at offset %d (committed %s)",
                tp.topic,
                tp.partition,
                offset,
                expected,
            )
        if expected is not None and offset > expected and tp not in gaps:
            gaps[tp] = (expected, offset)
        if expected is None or offset >= expected:
            self.processed[tp] = offset + 1

    async def read_gap(self, tp: TP, start: int, end: int) -> AsyncIterator[list[Any]]:
        """The records of a skipped range, a bounded piece at a time
        (``AVAILABILITY_GAP_READ_MAX_RECORDS`` / ``_MAX_BYTES``). A piece not read
        within ``AVAILABILITY_GAP_READ_TIMEOUT`` is asked for again (the fold waits,
        as for any write to the broker); offsets lost to retention are counted."""
        settings = self.settings
        log.warning(
            "%s[%d]: the consumer skipped offsets %d-%d; reading them directly",
            tp.topic,
            tp.partition,
            start,
            end - 1,
        )
        position = start
        while position < end:
            try:
                piece = await self.gap_reader.read(
                    tp.topic,
                    tp.partition,
                    position,
                    end,
                    max_records=settings.gap_read_max_records,
                    max_bytes=settings.gap_read_max_bytes,
                    timeout=settings.gap_read_timeout,
                )
            except TimeoutError:
                self.gap_timeouts += 1
                log.warning(
                    "%s[%d]: reading skipped offsets %d-%d timed out after %.0f s; retrying",
                    tp.topic,
                    tp.partition,
                    position,
                    end - 1,
                    settings.gap_read_timeout,
                )
                await asyncio.sleep(1.0)
                continue
            if piece.lost:
                self.gap_offsets_lost += piece.lost
                log.error(
                    "%s[%d]: offsets %d-%d of a skipped range are gone (retention): %d"
                    " events cannot be read; folding from %d on",
                    tp.topic,
                    tp.partition,
                    position,
                    position + piece.lost - 1,
                    piece.lost,
                    position + piece.lost,
                    extra={"topic": tp.topic, "partition": tp.partition},
                )
            if piece.records:
                yield piece.records
            position = piece.next_offset

    async def lag_by_partition(self) -> dict[str, int]:
        """Events after the *committed* offset, per input partition: a partition whose
        commits are stuck shows, even while its events are being folded (a partition
        the group never committed counts from offset 0). The committed offsets are
        kept for the metrics (``committed_by_partition``)."""
        consumer = self.app.consumer
        committed = committed_offsets(consumer)
        lags: dict[str, int] = {}
        offsets: dict[str, int] = {}
        for tp in consumer.assignment():
            if tp.topic not in self.topics:
                continue
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            name = f"{tp.topic}:{tp.partition}"
            done = committed.get(tp)
            if done is not None:
                offsets[name] = done
            lags[name] = max(0, highwater - (done or 0))
        self.committed_by_partition = offsets
        return lags

    def unfolded_events(self) -> int:
        """Events in the assigned input partitions after the last one folded (after
        the committed offset where none was folded yet since the assignment)."""
        consumer = self.app.consumer
        committed = committed_offsets(consumer)
        behind = 0
        for tp in consumer.assignment():
            if tp.topic not in self.topics:
                continue
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            done = self.processed.get(tp)
            if done is None:
                done = committed.get(tp) or 0
            behind += max(0, highwater - done)
        return behind

    def resume_stalled_partitions(self, recovered: bool) -> set[TP]:
        """Resume input partitions left paused outside recovery; returns them.

        Faust pauses the input partitions while tables recover and resumes them
        after, but skips the resume when it believes the recovery belongs to an
        older rebalance (seen when a broker reports the same generation twice).
        The partitions would then never be fetched again. A partition paused for two
        status reports in a row while nothing is rebalancing or recovering is
        resumed here.
        """
        app = self.app
        if not recovered or app.rebalancing or app.in_recovery:
            self._paused_seen = set()
            return set()
        paused_now = paused_partitions(app.consumer)
        paused = {tp for tp in paused_now if tp.topic in self.topics}
        stalled = paused & self._paused_seen
        self._paused_seen = paused - stalled
        if stalled:
            log.warning("resuming input partitions left paused: %s", sorted(stalled))
            app.consumer.resume_partitions(stalled)
        return stalled
