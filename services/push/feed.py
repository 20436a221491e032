"""The change feed's records as the push reads them (README "Change feed").

The one place that knows the record's shape: one record per SKU and location (keyed
``<sku> <location_id>``). A record that cannot be read is skipped (logged), never
fatal: the push must not stop on one bad record.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson

from availability.identifiers import is_location, is_sku, parse_timestamp

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FeedChange:
    """A SKU's figures at one version: ``figures`` maps the record's location to the
    ATS of ``channel`` there; ``computed_at`` is in seconds since the epoch."""

    sku: str
    version: int
    computed_at: float
    figures: dict[str, int]


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"not an integer: {value!r}")
    return value


def channel_ats(location: dict[str, Any], channel: str) -> int:
    """``max(0, on_hand - reserved - safety_stock - buffers[channel])``."""
    buffers = location.get("buffers") or {}
    buffer = _int(buffers.get(channel, 0)) if isinstance(buffers, dict) else 0
    ats = (
        _int(location["on_hand"])
        - _int(location["reserved"])
        - _int(location["safety_stock"])
        - buffer
    )
    return max(0, ats)


def parse_change(value: bytes | None, channel: str) -> FeedChange | None:
    """The record's figures for ``channel``; None (logged) when it cannot be read."""
    if value is None:
        return None  # a tombstone: nothing to push
    try:
        data = orjson.loads(value)
        sku = data["sku"]
        if not is_sku(sku):
            raise ValueError(f"bad sku {str(sku)[:80]!r}")
        location_id = data["location_id"]
        if not is_location(location_id):
            raise ValueError(f"bad location_id {str(location_id)[:80]!r}")
        figures = {location_id: channel_ats(data, channel)}
        return FeedChange(
            sku=sku,
            version=_int(data["version"]),
            computed_at=parse_timestamp(data["computed_at"]) / 1_000_000,
            figures=figures,
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        log.error("change feed: unreadable record skipped: %s", str(exc)[:200])
        return None
