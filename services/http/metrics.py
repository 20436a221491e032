"""Prometheus metrics of one app (its own ``CollectorRegistry``).

- ``availability_http_requests_total{method,route,status}`` and
  ``availability_http_request_duration_seconds{method,route}``, recorded by
  ``MetricsMiddleware`` (pure ASGI); ``route`` is the route template.
- From Redis at scrape time (``ServingCollector``): events folded per type, dead
  letters per source topic and consumer lag per worker and partition (the cluster's
  totals; the workers' own /metrics have more), and the last drift check's
  ``availability_drift_sku_locations{cause}`` with its time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.latency import REQUEST_LATENCY_BUCKETS

#: Route label of requests that matched no route (keeps the label set bounded).
UNMATCHED_ROUTE = "unmatched"
FOLDED_PREFIX = "folded:"
DEAD_LETTERS_PREFIX = "dead_letters:"


class ServingCollector(Collector):
    """Metrics the stream processor keeps in Redis, from the last ``update``."""

    def __init__(self) -> None:
        self._counts: Mapping[str, int] = {}
        self._workers: Mapping[str, Mapping[str, Any]] = {}
        self._drift: Mapping[str, Any] | None = None

    def update(
        self,
        counts: Mapping[str, int],
        workers: Mapping[str, Mapping[str, Any]],
        drift: Mapping[str, Any] | None = None,
    ) -> None:
        self._counts = dict(counts)
        self._workers = dict(workers)
        self._drift = drift

    def collect(self) -> Iterable[Metric]:
        folded = CounterMetricFamily(
            "availability_events_folded", "Input events folded into state, by type", labels=["type"]
        )
        dead = CounterMetricFamily(
            "availability_dead_letters",
            "Events sent to the dead-letter topic, by source topic",
            labels=["topic"],
        )
        for name, value in sorted(self._counts.items()):
            if name.startswith(FOLDED_PREFIX):
                folded.add_metric([name.removeprefix(FOLDED_PREFIX)], value)
            elif name.startswith(DEAD_LETTERS_PREFIX):
                dead.add_metric([name.removeprefix(DEAD_LETTERS_PREFIX)], value)
        lag = GaugeMetricFamily(
            "availability_consumer_lag",
            "Events past the committed offset, per stream-processor worker and topic:partition",
            labels=["worker", "partition"],
        )
        for worker_id, status in sorted(self._workers.items()):
            by_partition = status.get("lag_by_partition")
            if isinstance(by_partition, Mapping):
                for partition, value in sorted(by_partition.items()):
                    lag.add_metric([worker_id, str(partition)], float(value))
        families: list[Metric] = [folded, dead, lag]
        if self._drift is not None:
            drifted = GaugeMetricFamily(
                "availability_drift_sku_locations",
                "SKU-locations whose on-hand differed from the ERP export in the last drift"
                " check, by likely cause (events_after_as_of is no fault)",
                labels=["cause"],
            )
            by_cause = self._drift.get("by_cause")
            if isinstance(by_cause, Mapping):
                for cause, count in sorted(by_cause.items()):
                    drifted.add_metric([str(cause)], float(count))
            checked = GaugeMetricFamily(
                "availability_drift_checked_timestamp_seconds",
                "When the last drift check ran (Unix time)",
                value=float(self._drift.get("checked_at", 0.0)),
            )
            families += [drifted, checked]
        return families


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "availability_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "availability_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            buckets=REQUEST_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.refusals = Counter(
            "availability_http_auth_refusals",
            "Requests refused before any route: 401 (no valid credential) or 403 (a scope missing)",
            ["status"],
            registry=self.registry,
        )
        self.serving = ServingCollector()
        self.registry.register(self.serving)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def route_template(scope: Scope) -> str:
    """``/v1/availability/{sku}`` rather than the path asked for, so that labels stay few."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else UNMATCHED_ROUTE


class MetricsMiddleware:
    """Counts and times every HTTP request (a pure ASGI middleware: no body copying)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # unless a response starts: an exception becomes a 500 outside

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.observe(
                scope["method"],
                route_template(scope),
                status,
                time.perf_counter() - start,
            )
