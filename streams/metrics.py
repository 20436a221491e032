"""Prometheus metrics of one stream-processor worker, served on
``AVAILABILITY_WORKER_METRICS_PORT`` (``/metrics``; README "Observability").

Every figure is the worker's own: Prometheus sums over workers. The fold latency
histograms take a whole batch at once (numpy), so measuring them costs the fold
next to nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from infra.probes import LoopHeartbeat, serve_probes

log = logging.getLogger(__name__)

#: Seconds: from a few ms (the fold at rest) to minutes (a backlog, or an ERP balance
#: that was computed long before it was published).
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip


class BatchHistogram(Collector):
    """A histogram fed a batch of observations at a time, per label value."""

    def __init__(self, name: str, documentation: str, label: str) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self._bounds = np.array(LATENCY_BUCKETS)
        self._counts: dict[str, np.ndarray] = {}
        self._sums: dict[str, float] = {}
        self._lock = threading.Lock()  # collect() runs in the HTTP server's thread

    def observe(self, value: str, seconds: Sequence[float] | np.ndarray) -> None:
        if len(seconds) == 0:
            return
        samples = np.asarray(seconds, dtype=float)
        # Bucket i counts samples <= bound i (Prometheus "le"); the last is +Inf.
        slots = np.searchsorted(self._bounds, samples, side="left")
        added = np.bincount(slots, minlength=len(self._bounds) + 1)
        with self._lock:
            counts = self._counts.get(value)
            if counts is None:
                counts = self._counts[value] = np.zeros(len(self._bounds) + 1, dtype=np.int64)
            counts += added
            self._sums[value] = self._sums.get(value, 0.0) + float(samples.sum())

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        with self._lock:
            for value, counts in sorted(self._counts.items()):
                cumulative = np.cumsum(counts)
                buckets = [
                    (repr(bound), float(n))
                    for bound, n in zip(LATENCY_BUCKETS, cumulative[:-1], strict=True)
                ]
                buckets.append(("+Inf", float(cumulative[-1])))
                family.add_metric([value], buckets, self._sums[value])
        return [family]


class LagCollector(Collector):
    """Consumer lag and committed offsets per topic and partition, as of the worker's
    last status report (names ``topic:partition``)."""

    def __init__(self) -> None:
        self._lags: Mapping[str, int] = {}
        self._committed: Mapping[str, int] = {}

    def update(self, lags: Mapping[str, int], committed: Mapping[str, int]) -> None:
        self._lags = dict(lags)
        self._committed = dict(committed)

    def collect(self) -> Iterable[Metric]:
        lag = GaugeMetricFamily(
            "availability_worker_consumer_lag",
            "Events in the partition after the committed offset of this worker's group",
            labels=["topic", "partition"],
        )
        for name, value in sorted(self._lags.items()):
            topic, _, partition = name.rpartition(":")
            lag.add_metric([topic, partition], float(value))
        committed = GaugeMetricFamily(
            "availability_worker_committed_offset",
            "The offset committed for the partition (the next event to fold)",
            labels=["topic", "partition"],
        )
        for name, value in sorted(self._committed.items()):
            topic, _, partition = name.rpartition(":")
            committed.add_metric([topic, partition], float(value))
        return [lag, committed]


class Readings(Collector):
    """Counters and gauges the worker's parts keep themselves (plain integers), read
    when Prometheus scrapes: ``add(name, documentation, kind, read)``."""

    def __init__(self) -> None:
        self._readings: list[tuple[str, str, str, Callable[[], float]]] = []

    def add(self, name: str, documentation: str, kind: str, read: Callable[[], float]) -> None:
        self._readings.append((name, documentation, kind, read))

    def collect(self) -> Iterable[Metric]:
        families: list[Metric] = []
        for name, documentation, kind, read in self._readings:
            family = (
                CounterMetricFamily(name, documentation, value=read())
                if kind == "counter"
                else GaugeMetricFamily(name, documentation, value=read())
            )
            families.append(family)
        return families


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.folded = Counter(
            "availability_worker_events_folded",
            "Input events folded into state, by event type",
            ["type"],
            registry=r,
        )
        self.dead_letters = Counter(
            "availability_worker_dead_letters",
            "Events sent to the dead-letter topic, by source topic and reason",
            ["topic", "reason"],
            registry=r,
        )
        self.rekeyed = Counter(
            "availability_worker_events_rekeyed",
            "Events that arrived on another partition than their SKU's and were moved",
            registry=r,
        )
        self.batches = Counter("availability_worker_batches", "Batches folded", registry=r)
        self.readings = Readings()
        r.register(self.readings)
        self.fold_latency = BatchHistogram(
            "availability_fold_latency_seconds",
            "From an event's time (since=event_time: occurred_at or as_of) or its publish"
            " time (since=publish_time: the Kafka record timestamp) to its figures"
            " written to Redis",
            "since",
        )
        r.register(self.fold_latency)
        self.lag = LagCollector()
        r.register(self.lag)
        # Beaten by a task on the worker's loop (streams.app); read by /livez.
        self.heartbeat = LoopHeartbeat()

    def serve(self, port: int) -> bool:
        """Serve ``/metrics`` and the probes (``/livez``: the event loop turns;
        ``infra.probes``) on ``port`` (all interfaces); False if it cannot bind."""
        try:
            serve_probes(port, self.registry, live=self.heartbeat.check)
        except OSError as exc:
            log.warning("worker metrics not served: port %d: %s", port, exc)
            return False
        log.info("worker metrics on :%d/metrics, probes on /livez and /readyz", port)
        return True
