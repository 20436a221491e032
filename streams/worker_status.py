"""A worker's status report, every heartbeat: its status in Redis (read by
``/readyz`` and the HTTP API's metrics), its lag in the metrics, its counts in Redis,
and a progress line in the log now and then."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.app import Processor

log = logging.getLogger(__name__)

PROGRESS_LOG_INTERVAL = 10.0  # seconds between progress lines while busy
IDLE_LOG_INTERVAL = 300.0  # ... and while idle


class WorkerStatus:
    def __init__(self, worker: Processor) -> None:
        self.worker = worker
        #: As of the last report: read from the metrics server's thread.
        self.reported_ready = False
        self._counts_since: Counter[str] = Counter()
        self._progress_logged = time.monotonic()

    async def report(self) -> None:
        """Status to Redis (read by /readyz and the metrics), lag to the metrics,
        counts to Redis, a progress line to the log."""
        worker = self.worker
        try:
            worker.progress.resume_stalled_partitions(worker.recovered)
            lags = await worker.progress.lag_by_partition() if worker.recovered else {}
            behind = worker.progress.unfolded_events() if worker.recovered else 0
            counts, worker.counts = worker.counts, Counter()
            self._log_progress(counts, lags)
            await worker.store.add_counts(counts)
            ready = self.reported_ready = worker.ready
            worker.metrics.lag.update(lags, worker.progress.committed_by_partition)
            await worker.store.report_worker(
                worker.worker_id,
                {
                    "worker_id": worker.worker_id,
                    "recovered": ready,
                    # Readiness asks whether the worker has folded what is there
                    # (README "HTTP API", /readyz); the lag per partition, like the
                    # metrics and alerts, counts from the committed offsets.
                    "lag": behind,
                    "committed_lag": sum(lags.values()),
                    "lag_by_partition": lags,
                    "pending_writes": worker.writer.pending,
                    "serving_writes": worker.writer.writes,
                    "serving_errors": worker.writer.errors,
                    "feed_pending": worker.feed.pending,
                    "feed_published": worker.feed.published,
                    "feed_errors": worker.feed.errors,
                    "rebuilding": sorted(worker.rebuild.rebuilding),
                    "records_rebuilt": worker.rebuild.records_rewritten,
                },
            )
        except Exception as exc:  # status is best effort; the fold goes on
            log.warning("status report failed: %s", exc)

    def _log_progress(self, counts: Counter[str], lags: dict[str, int]) -> None:
        worker = self.worker
        self._counts_since.update(counts)
        now = time.monotonic()
        quiet = not self._counts_since and not worker.writer.pending
        interval = IDLE_LOG_INTERVAL if quiet else PROGRESS_LOG_INTERVAL
        if now - self._progress_logged < interval:
            return
        folded = sum(n for name, n in self._counts_since.items() if name.startswith("folded:"))
        dead = sum(n for name, n in self._counts_since.items() if name.startswith("dead_letters:"))
        log.info(
            "progress: %d events folded, %d dead letters, %d re-keyed in %.0f s; lag %d;"
            " %d SKUs owned, %d serving writes pending, recovered=%s",
            folded,
            dead,
            self._counts_since["rekeyed"],
            now - self._progress_logged,
            sum(lags.values()),
            len(worker.states.by_sku),
            worker.writer.pending,
            worker.recovered,
        )
        self._counts_since.clear()
        self._progress_logged = now
