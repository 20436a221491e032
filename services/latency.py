"""What the HTTP and gRPC APIs' request metrics share."""

from __future__ import annotations

#: Seconds, for request latency histograms (HTTP and gRPC).
REQUEST_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
