"""The change feed's record (README "Change feed"): the one format every producer of
``availability.changes`` writes, the worker (``streams.change_feed``) and the
reservation API (``services.reservations``) alike."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from availability.ats import SkuAvailability


def format_computed_at(computed_at: int) -> str:
    """``computed_at`` (µs since the epoch) as RFC 3339 UTC with microseconds."""
    stamp = datetime.fromtimestamp(computed_at / 1_000_000, UTC)
    return stamp.isoformat(timespec="microseconds").replace("+00:00", "Z")


def change_record(availability: SkuAvailability, version: int, computed_at: int | str) -> bytes:
    """The feed's JSON value for a record at ``version`` (``computed_at`` in µs, or
    already formatted by ``format_computed_at``)."""
    locations = []
    total = 0
    for loc in availability.locations:
        ats = loc.on_hand - loc.reserved - loc.safety_stock  # with buffer 0
        if ats < 0:
            ats = 0
        total += ats
        locations.append(
            {
                "location_id": loc.location_id,
                "on_hand": loc.on_hand,
                "reserved": loc.reserved,
                "in_transit": loc.in_transit,
                "damaged": loc.damaged,
                "safety_stock": loc.safety_stock,
                "buffers": dict(sorted(loc.channel_buffers.items())) if loc.channel_buffers else {},
                "ats": ats,
            }
        )
    if not isinstance(computed_at, str):
        computed_at = format_computed_at(computed_at)
    return orjson.dumps(
        {
            "sku": availability.sku,
            "version": version,
            "computed_at": computed_at,
            "ats": total,
            "locations": locations,
        }
    )
