"""What ``python -m loadtests.bench`` is asked to measure (``Params``, from its command
line), its targets and the settings its measurements share: imported by each part of
the benchmark, and importing none of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

REPO_ROOT: Final[Path] = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT: Final[Path] = REPO_ROOT / "bench-results" / "bench.json"
FOLD_RATIO_TARGET: Final[float] = 0.75
READ_RATIO_TARGET: Final[float] = 0.80
READ_P99_TARGET_MS: Final[float] = 5.0
FRESHNESS_P99_TARGET_MS: Final[float] = 100.0
FRESHNESS_TARGET_RATE: Final[float] = 1000.0
# "The highest rate the fold sustains": tried at these fractions of the one-worker
# backlog rate, highest first, until the fold keeps up (every probed event seen,
# p99 within SUSTAINED_P99_MS). During these runs the producer, the prober and the
# HTTP server share the two cores with the worker, and every sale is on a SKU of its
# own, so the worker folds less than it did alone on the backlog.
HIGH_RATE_FRACTIONS: Final[tuple[float, ...]] = (0.5, 0.3, 0.2)
SUSTAINED_P99_MS: Final[float] = 500.0
SECTIONS: Final[tuple[str, ...]] = ("reads", "reserve", "fold", "freshness", "state", "push")
GRPC_GET_METHOD: Final[str] = "/availability.v1.AvailabilityService/GetAvailability"
POLL_INTERVAL: Final[float] = 0.2
MEMORY_SAMPLE: Final[int] = 500  # serving records whose MEMORY USAGE is taken
# The freshness producer lingers as Kafka's producer does by default since 4.0
# (linger.ms=5): sending each event in a request of its own cost the development
# broker about 60% of a core at 1,000 events/s, on a machine of two. The linger counts
# in the latency measured (from just before the send).
PRODUCER_LINGER_MS: Final[int] = 5
# The load producer batches: the broker takes the backlog in seconds.
LOAD_BATCH_BYTES: Final[int] = 65536


@dataclass(frozen=True)
class Params:
    skus: int
    locations: int
    mix_events: int
    partitions: int
    redis_url: str
    seed: int
    fold_timeout: float
    workers: tuple[int, ...]
    floor: bool
    worker_batch_bytes: int
    sections: tuple[str, ...]
    read_seconds: float
    read_rounds: int
    read_connections: int
    freshness_seconds: float
    freshness_rates: tuple[str, ...]
    popularity: str
    probes_per_second: float
    state_seconds: float
    state_rate: float
    state_horizon: float

    @property
    def events(self) -> int:
        return self.skus * self.locations + self.mix_events
