"""Prometheus metrics of the push process, on ``AVAILABILITY_PUSH_METRICS_PORT``
(README "Observability"). Labelled by target (the shop's configured name)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from infra.probes import Check, serve_probes

#: Seconds from a change's computed_at to the shop's acknowledgement.
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class PushMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.lag = Histogram(
            "availability_push_lag_seconds",
            "From a change's computed_at to the shop's acknowledgement of its figure",
            ["target"],
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.calls = Counter(
            "availability_push_calls",
            "Admin API calls answered, by operation and outcome",
            ["target", "operation", "outcome"],
            registry=r,
        )
        self.points = Counter(
            "availability_push_points",
            "Query cost points spent (actualQueryCost)",
            ["target"],
            registry=r,
        )
        self.quantities = Counter(
            "availability_push_quantities",
            "Levels set in the shop (acknowledged)",
            ["target"],
            registry=r,
        )
        self.throttled = Counter(
            "availability_push_throttled_seconds",
            "Seconds spent waiting for the shop's bucket after a THROTTLED answer",
            ["target"],
            registry=r,
        )
        self.failures = Counter(
            "availability_push_failures",
            "Failed calls or levels, by kind (http_5xx, timeout, connection, unauthorized,"
            " forbidden, internal_error, stale_compare, user_error, ...)",
            ["target", "kind"],
            registry=r,
        )
        self.disagreements = Counter(
            "availability_push_disagreements",
            "Stale compares where the shop held less than our figure (its own sales)",
            ["target"],
            registry=r,
        )
        self.held = Gauge(
            "availability_push_held_levels",
            "Levels held below our figure after a stale compare",
            ["target"],
            registry=r,
        )
        self.unmapped = Gauge(
            "availability_push_unmapped_skus",
            "SKUs the shop has no inventory item for",
            ["target"],
            registry=r,
        )
        self.pending = Gauge(
            "availability_push_pending_levels",
            "Levels whose figure is not yet in the shop (deferred, queued or under way)",
            ["target"],
            registry=r,
        )
        self.up = Gauge(
            "availability_push_target_up",
            "1 while the push writes to the target; 0 once stopped by a 401/403",
            ["target"],
            registry=r,
        )
        self.feed_lag = Gauge(
            "availability_push_feed_lag",
            "Change-feed records not yet read by this push process, per partition",
            ["partition"],
            registry=r,
        )

    def serve(self, port: int, live: Check) -> None:
        """``/metrics`` and ``/livez`` (the event loop turns) on ``port`` (``infra.probes``)."""
        serve_probes(port, self.registry, live=live)
