"""Prometheus metrics of the reservation API, in the serving process's registry: the
HTTP API's (``/metrics``) and the gRPC server's (its metrics port), each labelled with
its ``api``, so that a sum over both counts every reserve request once."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

#: Outcomes of a reserve request (the ``outcome`` label).
OUTCOMES = (
    "created",  # 201 / OK, holds placed and the events acknowledged
    "repeated",  # the same request again: the first answer
    "insufficient_stock",  # 409 / FAILED_PRECONDITION, nothing held
    "conflict",  # 409 / ALREADY_EXISTS or ABORTED: another body, or one being placed
    "unavailable",  # 503 / UNAVAILABLE, nothing held
)
#: The ``api`` label: which API the process serves.
APIS = ("http", "grpc")


class ReservationMetrics:
    def __init__(self, registry: CollectorRegistry, api: str = "http") -> None:
        if api not in APIS:
            raise ValueError(f"api must be one of {', '.join(APIS)}, got {api!r}")
        self.api = api
        self.reservations = Counter(
            "availability_reservations",
            "Reserve requests by API (http, grpc) and outcome (created, repeated,"
            " insufficient_stock, conflict, unavailable)",
            ["api", "outcome"],
            registry=registry,
        )
        for outcome in OUTCOMES:
            self.reservations.labels(api, outcome)
        self.releases = Counter(
            "availability_reservation_releases",
            "Reservations released through the API (repeats not counted), by API",
            ["api"],
            registry=registry,
        ).labels(api)
        self.holds_expired = Counter(
            "availability_reservation_holds_expired",
            "Holds that reached their deadline without being handed over to the fold"
            " (found and purged by this process): their event was never published, or the"
            " worker did not fold it within the handover window",
            registry=registry,
        )

    def outcome(self, outcome: str) -> None:
        self.reservations.labels(self.api, outcome).inc()
