"""The service's own view of a run's latency: the HTTP API's histograms, read from
``/metrics`` before and after the run: the request duration
(``availability_http_request_duration_seconds``) and, for reserves, the time of each
step (``availability_reservation_phase_seconds``). Beside the load generator's
figures they tell time in the service from time waiting for a core, and a step's
time from another's (the broker's acknowledgement from Redis's round trips)."""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Mapping
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

DURATION = "availability_http_request_duration_seconds"
PHASE_METRIC = "availability_reservation_phase_seconds"


def histograms(
    base_url: str, authorization: str, name: str, by: str, **labels: str
) -> dict[str, dict[float, float]]:
    """Per value of the label ``by``, the cumulative counts per upper bound (seconds) of
    the histogram ``name`` among the series with ``labels``, now."""
    request = urllib.request.Request(
        f"{base_url}/metrics", headers={"Authorization": authorization}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read().decode()
    found: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != f"{name}_bucket" or any(
                sample.labels.get(k) != v for k, v in labels.items()
            ):
                continue
            series = found.setdefault(sample.labels.get(by, ""), {})
            series[float(sample.labels["le"])] = sample.value
    return found


def duration_buckets(
    base_url: str, authorization: str, method: str, route: str
) -> dict[float, float]:
    """The cumulative counts per upper bound (seconds) of one route's histogram, now."""
    series = histograms(base_url, authorization, DURATION, "route", method=method, route=route)
    return series.get(route, {})


def summarize_buckets(
    before: Mapping[float, float], after: Mapping[float, float]
) -> dict[str, Any]:
    """Requests answered between the two readings; the bucket bound that holds their
    p99 (ms, None: beyond the last finite bound), and the share within each bound."""
    counts = {le: after.get(le, 0.0) - before.get(le, 0.0) for le in sorted(after)}
    total = counts.get(math.inf, 0.0)
    if total <= 0:
        return {"requests": 0, "p99_at_most_ms": None, "within_ms": {}}
    p99_bound = next((le for le, n in counts.items() if n >= 0.99 * total), math.inf)
    return {
        "requests": int(total),
        "p99_at_most_ms": None if math.isinf(p99_bound) else p99_bound * 1000,
        "within_ms": {
            f"{le * 1000:g}": round(100 * n / total, 2)
            for le, n in counts.items()
            if not math.isinf(le)
        },
    }
