"""The worker's metrics read at scrape time: counters and gauges that the writer,
feed, rebuild, pruner and skipped-range reader keep as plain numbers."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.app import Processor


def register_worker_readings(processor: Processor) -> None:
    """Expose ``processor``'s counts on its metrics endpoint (README "Observability")."""
    add = processor.metrics.readings.add
    add(
        "availability_worker_serving_writes",
        "Serving records written to Redis",
        "counter",
        lambda: processor.writer.writes,
    )
    add(
        "availability_worker_serving_write_errors",
        "Writes of serving records that failed (the records stay pending and are retried)",
        "counter",
        lambda: processor.writer.errors,
    )
    add(
        "availability_worker_serving_writes_pending",
        "SKUs whose serving record is waiting to be written",
        "gauge",
        lambda: processor.writer.pending,
    )
    add(
        "availability_worker_reservation_holds_handed_over",
        "Reservation holds of the API removed by the write that first counts their"
        ' folded line (README "Reservations")',
        "counter",
        lambda: processor.writer.handed_over,
    )
    add(
        "availability_worker_reservation_holds_expired",
        "Reservation holds that reached their deadline without being handed over,"
        " found (and purged) by this worker's record writes and hold checks",
        "counter",
        lambda: processor.writer.holds_expired + processor.hold_sweep.expired,
    )
    add(
        "availability_worker_serving_record_errors",
        "Serving records that could not be computed (left out, not retried until the"
        " SKU changes again; each SKU logged once)",
        "counter",
        lambda: processor.writer.record_errors,
    )
    add(
        "availability_worker_skipped_offsets_lost",
        "Offsets of a range the consumer skipped that retention had deleted before"
        " the worker read it (their events are missing from the figures)",
        "counter",
        lambda: processor.progress.gap_offsets_lost,
    )
    add(
        "availability_worker_skipped_range_timeouts",
        "Reads of a skipped offset range that timed out (retried)",
        "counter",
        lambda: processor.progress.gap_timeouts,
    )
    add(
        "availability_worker_states_pruned",
        "SKU states from which settled baselines, old reservation lines or old"
        " transfer and damaged-return ids were removed",
        "counter",
        lambda: processor.pruner.pruned,
    )
    add(
        "availability_worker_prune_errors",
        "SKU states whose pruning failed (left as they were)",
        "counter",
        lambda: processor.pruner.errors,
    )
    add(
        "availability_worker_change_feed_published",
        "Change-feed records the broker acknowledged",
        "counter",
        lambda: processor.feed.published,
    )
    add(
        "availability_worker_change_feed_errors",
        "Change-feed sends that failed (retried)",
        "counter",
        lambda: processor.feed.errors,
    )
    add(
        "availability_worker_serving_records_rebuilt",
        "Serving records rewritten by a rebuild (Redis lost its data, a new assignment,"
        " or an operator's request)",
        "counter",
        lambda: processor.rebuild.records_rewritten,
    )
    add(
        "availability_worker_rebuilding_partitions",
        "Partitions whose serving records this worker is rewriting now",
        "gauge",
        lambda: len(processor.rebuild.rebuilding),
    )
    add(
        "availability_worker_skus",
        "SKUs whose state this worker holds",
        "gauge",
        lambda: len(processor.states.by_sku),
    )
    add(
        "availability_worker_ready",
        "1 when the state is recovered, the rules loaded, and no rebalance or rebuild is under way",
        "gauge",
        # As of the last status report: read from the metrics server's thread.
        lambda: 1.0 if processor.status.reported_ready else 0.0,
    )
