"""Prometheus metrics of the reservation API, in the serving process's registry: the
HTTP API's (``/metrics``) and the gRPC server's (its metrics port), each labelled with
its ``api``, so that a sum over both counts every reserve request once."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.latency import REQUEST_LATENCY_BUCKETS

#: Outcomes of a reserve request (the ``outcome`` label).
OUTCOMES = (
    "created",  # 201 / OK, holds placed and the events acknowledged
    "repeated",  # the same request again: the first answer
    "insufficient_stock",  # 409 / FAILED_PRECONDITION, nothing held
    "conflict",  # 409 / ALREADY_EXISTS or ABORTED: another body, or one being placed
    "unavailable",  # 503 / UNAVAILABLE, nothing held
)
#: Steps of a reserve request that went through (the ``phase`` label): Redis round
#: trips, and the broker's acknowledgement of the events.
PHASES = (
    "claim",  # the claim, the notes and the placement figures (one Redis round trip)
    "hold",  # every line's check and hold (one round trip)
    "publish",  # the events and feed records until the broker acknowledged them
    "confirm",  # deadlines, marks and the record (one round trip)
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

        self.phases = Histogram(
            "availability_reservation_phase_seconds",
            "Time of each step of the reserve requests that got to it, by API and phase"
            " (claim, hold, publish: until the broker acknowledged, confirm)",
            ["api", "phase"],
            buckets=REQUEST_LATENCY_BUCKETS,
            registry=registry,
        )
        self._phase = {phase: self.phases.labels(api, phase) for phase in PHASES}

    def took(self, phase: str, seconds: float) -> None:
        self._phase[phase].observe(seconds)

    def outcome(self, outcome: str) -> None:
        self.reservations.labels(self.api, outcome).inc()
