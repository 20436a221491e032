"""Prometheus metrics of the reservation API (in the serving process's registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

#: Outcomes of a reserve request (the ``outcome`` label).
OUTCOMES = (
    "created",  # 201, holds placed and the events acknowledged
    "repeated",  # the same request again: the first answer
    "insufficient_stock",  # 409, nothing held
    "conflict",  # 409, another body under the same id, or one being placed
    "unavailable",  # 503, nothing held
)


class ReservationMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.reservations = Counter(
            "availability_reservations",
            "Reserve requests by outcome (created, repeated, insufficient_stock, conflict,"
            " unavailable)",
            ["outcome"],
            registry=registry,
        )
        for outcome in OUTCOMES:
            self.reservations.labels(outcome)
        self.releases = Counter(
            "availability_reservation_releases",
            "Reservations released through the API (repeats not counted)",
            registry=registry,
        )
        self.holds_expired = Counter(
            "availability_reservation_holds_expired",
            "Holds that reached their deadline without being handed over to the fold"
            " (found and purged by this process): their event was never published, or the"
            " worker did not fold it within the handover window",
            registry=registry,
        )

    def outcome(self, outcome: str) -> None:
        self.reservations.labels(outcome).inc()
