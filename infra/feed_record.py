"""The change feed's record (README "Change feed"): the one format every producer of
``availability.changes`` writes, the worker (``streams.change_feed``) and the
reservation API (``services.reservations``) alike.

One record per SKU and location that changed, keyed ``<sku> <location_id>`` (so that
a compacted topic keeps every location's latest) and sent to the SKU's partition (so
that a SKU's records stay in one partition, in order)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from availability.ats import LocationAvailability


def format_computed_at(computed_at: int) -> str:
    """``computed_at`` (µs since the epoch) as RFC 3339 UTC with microseconds."""
    stamp = datetime.fromtimestamp(computed_at / 1_000_000, UTC)
    return stamp.isoformat(timespec="microseconds").replace("+00:00", "Z")


def record_key(sku: str, location_id: str) -> bytes:
    # Neither alphabet has a space (availability.identifiers).
    return f"{sku} {location_id}".encode()


def location_record(
    sku: str, location: LocationAvailability | str, version: int, computed_at: int | str
) -> bytes:
    """The feed's JSON value for one location of a SKU at ``version`` (``computed_at``
    in µs, or already formatted by ``format_computed_at``); a location the SKU no
    longer has (its id alone) has every figure 0: it has no stock."""
    if not isinstance(computed_at, str):
        computed_at = format_computed_at(computed_at)
    if isinstance(location, str):
        location = LocationAvailability(location, 0, 0, 0, 0, 0, {})
    ats = location.on_hand - location.reserved - location.safety_stock  # with buffer 0
    buffers = location.channel_buffers
    return orjson.dumps(
        {
            "sku": sku,
            "location_id": location.location_id,
            "version": version,
            "computed_at": computed_at,
            "on_hand": location.on_hand,
            "reserved": location.reserved,
            "in_transit": location.in_transit,
            "damaged": location.damaged,
            "safety_stock": location.safety_stock,
            "buffers": dict(sorted(buffers.items())) if buffers else {},
            "ats": ats if ats > 0 else 0,
        }
    )
