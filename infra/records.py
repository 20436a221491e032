"""The bytes of a serving record (``infra.store``): what the write script stores and
what a read sends, so that serving a read parses nothing.

An answer tail is the JSON of ``{"ats": .., "locations": [..]}`` without its opening
brace; a read puts ``{"sku":..,"channel":..,`` in front of it (``render_answer``).
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from availability.ats import SkuAvailability

#: The record field holding the answer tail of every channel without a buffer.
DEFAULT_FIELD = b"*"


def answer_tail(availability: SkuAvailability, channel: str) -> bytes:
    # view() spelled out: this runs for every changed SKU, channel and location.
    locations = []
    total = 0
    for loc in availability.locations:
        buffer = loc.channel_buffers.get(channel, 0) if loc.channel_buffers else 0
        ats = loc.on_hand - loc.reserved - loc.safety_stock - buffer
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
                "buffer": buffer,
                "ats": ats,
            }
        )
    return orjson.dumps({"ats": total, "locations": locations})[1:]


def _canonical(availability: SkuAvailability) -> bytes:
    """``d``: ``SkuAvailability.to_data`` as JSON, keys sorted (equal figures, equal bytes)."""
    return orjson.dumps(
        {
            "sku": availability.sku,
            "locations": [
                [
                    loc.location_id,
                    loc.on_hand,
                    loc.reserved,
                    loc.in_transit,
                    loc.damaged,
                    loc.safety_stock,
                    dict(loc.channel_buffers) if loc.channel_buffers else {},
                ]
                for loc in availability.locations
            ],
        },
        option=orjson.OPT_SORT_KEYS,
    )


def encode_record(availability: SkuAvailability) -> list[bytes]:
    """``[d, field, tail, field, tail, ...]``: the arguments of the write script."""
    args = [_canonical(availability)]
    for channel in availability.channels():
        args.append(b"c:" + channel.encode())
        args.append(answer_tail(availability, channel))
    # The tail for unnamed channels is the same for all of them: buffer 0.
    args.append(DEFAULT_FIELD)
    args.append(answer_tail(availability, ""))  # "" is no valid channel: buffer 0
    return args


def render_answer(sku: str, channel: str, tail: bytes) -> bytes:
    # sku and channel are validated identifiers: no character needs JSON escaping.
    return b'{"sku":"' + sku.encode() + b'","channel":"' + channel.encode() + b'",' + tail


def batch_items(skus: Iterable[str], channel: str, tails: Iterable[bytes | None]) -> bytes:
    """The body of a batch answer, in request order."""
    parts = []
    for sku, tail in zip(skus, tails, strict=True):
        if tail is None:
            parts.append(b'{"sku":"' + sku.encode() + b'","ats":0,"locations":[]}')
        else:
            parts.append(render_answer(sku, channel, tail))
    return b'{"channel":"' + channel.encode() + b'","items":[' + b",".join(parts) + b"]}"
