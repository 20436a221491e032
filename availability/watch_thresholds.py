"""Which changes a ``WatchAvailability`` stream with thresholds sends (README "Live
figures").

A store screen or a replenishment app wants "SKU-1 at STORE-001 fell to 2", not every
unit sold. A watch may therefore set a ``low_stock`` level, a ``min_delta``, or both.
They apply per watched location, to its ats, compared with the figures of the last
message sent for the SKU (a location that message did not list counts as 0, as a
read of that location would answer). A change is sent when, for some location:

- ``low_stock`` L: its ats changed and the old or the new value is at or below L
  (it crossed L in either direction, or moved while at or below it);
- ``min_delta`` D: its ats moved by at least D.

With both set, either suffices. What a client can rely on follows exactly: after
every change, whether sent or not, each location's ats in the last message sent

- is the current one, unless both are above L (``low_stock``);
- is less than D away from the current one (``min_delta``).

``worth_sending`` is the negation of those guarantees, so a message goes out exactly
when the last one would otherwise stop telling the truth by the watch's own terms.
Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Location id -> its ats, as a watch shows it.
Figures = Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """A watch's thresholds; both None: every change of what it shows is sent."""

    low_stock: int | None = None
    min_delta: int | None = None

    def __post_init__(self) -> None:
        if self.low_stock is not None and self.low_stock < 0:
            raise ValueError(f"low_stock must be at least 0, got {self.low_stock}")
        if self.min_delta is not None and self.min_delta < 1:
            raise ValueError(f"min_delta must be at least 1, got {self.min_delta}")

    @property
    def active(self) -> bool:
        return self.low_stock is not None or self.min_delta is not None


NO_THRESHOLDS = Thresholds()


def figures_of(answer: Mapping[str, Any]) -> dict[str, int]:
    """The per-location ats of a watched view (``availability.ats.watched_view``)."""
    return {location["location_id"]: location["ats"] for location in answer["locations"]}


def location_calls_for_sending(thresholds: Thresholds, shown: int, current: int) -> bool:
    """Whether one location's move from ``shown`` (last sent) to ``current`` must be
    sent under ``thresholds`` (which must be active)."""
    if shown == current:
        return False
    low = thresholds.low_stock
    if low is not None and min(shown, current) <= low:
        return True
    delta = thresholds.min_delta
    return delta is not None and abs(current - shown) >= delta


def worth_sending(thresholds: Thresholds, shown: Figures, current: Figures) -> bool:
    """Whether a change from the figures last sent (``shown``) to ``current`` is sent.

    Only for a watch with thresholds: without, every change of what a watch shows is
    sent, its other figures (on hand, reserved, ...) included.
    """
    if not thresholds.active:
        raise ValueError("worth_sending needs thresholds; without, every change is sent")
    return any(
        location_calls_for_sending(thresholds, shown.get(location, 0), current.get(location, 0))
        for location in shown.keys() | current.keys()
    )
