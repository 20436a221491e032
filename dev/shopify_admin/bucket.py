"""Shopify's leaky bucket for the GraphQL Admin API, one per shop (per app and shop).

Restore rates by plan are Shopify's documented figures (shopify.dev "GraphQL Admin
API rate limits": Standard 100, Advanced 200, Plus 1,000, Enterprise 2,000 points/s).
The bucket sizes are not in that table: Standard answers ``maximumAvailable: 2000``
with ``restoreRate: 100`` (as seen in real responses), i.e. 20 seconds of restore;
the other plans are assumed to keep that ratio.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final

PLANS: Final[dict[str, tuple[float, float]]] = {
    "standard": (2_000.0, 100.0),
    "advanced": (4_000.0, 200.0),
    "plus": (20_000.0, 1_000.0),
    "enterprise": (40_000.0, 2_000.0),
}
DEFAULT_PLAN: Final = "standard"


class LeakyBucket:
    """Points available now, refilled continuously at ``restore_rate`` up to ``maximum``.

    A call may start only if the bucket holds its *requested* cost; afterwards the
    difference to the *actual* cost is given back (Shopify's "Requested and actual cost").
    """

    def __init__(
        self,
        maximum: float,
        restore_rate: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.maximum = float(maximum)
        self.restore_rate = float(restore_rate)
        self._available = self.maximum
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._at)
        self._at = now
        self._available = min(self.maximum, self._available + elapsed * self.restore_rate)

    @property
    def available(self) -> float:
        self._refill()
        return self._available

    def try_take(self, cost: float) -> bool:
        """Take ``cost`` points if the bucket holds them; False (nothing taken) if not."""
        self._refill()
        if cost > self._available:
            return False
        self._available -= cost
        return True

    def give_back(self, points: float) -> None:
        self._refill()
        self._available = min(self.maximum, self._available + max(0.0, points))

    def configure(
        self,
        maximum: float | None = None,
        restore_rate: float | None = None,
        currently_available: float | None = None,
    ) -> None:
        self._refill()
        if maximum is not None:
            self.maximum = float(maximum)
        if restore_rate is not None:
            self.restore_rate = float(restore_rate)
        if currently_available is not None:
            self._available = float(currently_available)
        self._available = min(self._available, self.maximum)

    def status(self) -> dict[str, float | int]:
        """``throttleStatus`` as Shopify writes it: the bucket's size and rate as floats,
        what is available now as a whole number of points."""
        return {
            "maximumAvailable": self.maximum,
            "currentlyAvailable": math.floor(self.available),
            "restoreRate": self.restore_rate,
        }
