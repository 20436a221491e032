"""The push's arithmetic, without I/O or a clock (time is passed in, in seconds):

- :func:`due_at`: when a SKU-location's figure must be in the shop, given the policy,
  what was last pushed and since when the difference has been waiting;
- :func:`after_stale_compare` and :func:`capped`: the quantity to set once Shopify
  answered ``CHANGE_FROM_QUANTITY_STALE`` (README "Shopify push": the stale-compare
  rule);
- :class:`BucketEstimate`: Shopify's leaky bucket as learnt from its answers, to pace
  calls so that it is never overdrawn;
- :func:`backoff`: jittered exponential back-off for retries.
"""

from __future__ import annotations

from dataclasses import dataclass

from availability.push_policy import PushPolicy


def due_at(
    policy: PushPolicy, figure: int, last_pushed: int | None, pending_since: float
) -> float | None:
    """When ``figure`` must have been pushed: ``pending_since`` means at once,
    ``pending_since + max_staleness`` means it may wait, None means nothing to push.

    ``last_pushed`` None (never pushed, or forgotten): at once. A crossing to or from 0
    is always at once. At or below ``low_stock`` (our figure or the one the shop shows)
    every change is at once. Above it, at once when the figure moved at least
    ``min_delta`` units *and* at least ``min_delta_pct`` percent of the last pushed
    figure since the last push (a threshold left null does not count; both null: only
    the staleness bound pushes it)."""
    if last_pushed is None:
        return pending_since
    if figure == last_pushed:
        return None
    if figure == 0 or last_pushed == 0:
        return pending_since
    if policy.low_stock is not None and min(figure, last_pushed) <= policy.low_stock:
        return pending_since
    if policy.min_delta is not None or policy.min_delta_pct is not None:
        moved = abs(figure - last_pushed)
        enough_units = policy.min_delta is None or moved >= policy.min_delta
        enough_pct = (
            policy.min_delta_pct is None or moved * 100 >= policy.min_delta_pct * last_pushed
        )
        if enough_units and enough_pct:
            return pending_since
    return pending_since + policy.staleness


def after_stale_compare(ours: int, shop_now: int) -> int:
    """The quantity to set when our compare-and-set was stale: Shopify's available
    moved under us (its own sales, a merchant's edit) and ``shop_now`` is what it holds
    now. Our figure ``ours`` does not include those sales yet, so it may lower the
    shop's figure but never raise it: ``min(ours, shop_now)``."""
    return max(0, min(ours, shop_now))


@dataclass(frozen=True, slots=True)
class Hold:
    """After a stale compare: until ``until``, our figures may not raise the level above
    ``ceiling`` (what Shopify held), since they may still miss Shopify's sales (its
    order webhooks take a while to come back as reservations)."""

    ceiling: int
    until: float


def capped(ours: int, hold: Hold | None, now: float) -> int:
    """The quantity to push for our figure ``ours`` under ``hold``."""
    if hold is None or now >= hold.until:
        return ours
    return min(ours, hold.ceiling)


class BucketEstimate:
    """Shopify's leaky bucket for one shop as its answers describe it
    (``extensions.cost.throttleStatus``): ``maximum`` points, refilled at ``rate`` per
    second; ``available`` at time ``at``. Unknown until the first answer: then calls
    go out one at a time until one teaches it."""

    def __init__(self) -> None:
        self.maximum: float | None = None
        self.rate: float | None = None
        self.available = 0.0
        self.at = 0.0
        self.reserved = 0.0

    @property
    def known(self) -> bool:
        return self.maximum is not None and self.rate is not None

    def learn(self, maximum: float, available: float, rate: float, now: float) -> None:
        """An answer's ``throttleStatus``: the bucket as Shopify saw it (minus what other
        calls of ours, still under way, will take)."""
        self.maximum, self.rate = float(maximum), float(rate)
        self.available = float(available)
        self.at = now

    def level(self, now: float) -> float:
        """Points we may still spend now (calls under way counted as spent)."""
        if self.maximum is None or self.rate is None:
            return 0.0
        refilled = min(self.maximum, self.available + max(0.0, now - self.at) * self.rate)
        return refilled - self.reserved

    def wait(self, cost: float, now: float) -> float:
        """Seconds to wait before a call of requested ``cost`` may start."""
        if self.rate is None or self.rate <= 0:
            return 0.0
        missing = cost - self.level(now)
        return max(0.0, missing / self.rate)

    def reserve(self, cost: float) -> None:
        self.reserved += cost

    def release(self, cost: float) -> None:
        self.reserved = max(0.0, self.reserved - cost)

    def restore_time(self, cost: float, currently_available: float, rate: float) -> float:
        """A THROTTLED answer: seconds until the bucket holds ``cost`` again."""
        return max(0.0, (cost - currently_available) / rate) if rate > 0 else 1.0


def backoff(attempt: int, jitter: float, base: float = 0.2, cap: float = 10.0) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): exponential up to ``cap``, times
    ``jitter`` in [0.5, 1.5) (pass ``0.5 + random()``), so that retries of many calls
    do not arrive together."""
    return min(cap, base * 2.0 ** max(0, attempt - 1)) * jitter
