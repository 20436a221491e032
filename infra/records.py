"""The bytes of a serving record (``infra.store``): what the write script stores, what
a change announces and what a read sends, so that serving a read parses nothing.

A record keeps one field per location (README "Serving layer"): ``a:<loc>`` is the
location's answer object for a channel without a buffer, ``b:<ch>:<loc>`` the same for
a channel the location has a buffer for, and ``t:*`` / ``t:<ch>`` the SKU's total per
channel beside them. One sold unit at one location therefore rewrites and announces
that location alone, whatever the SKU's location count; a read of the whole SKU joins
the fragments (``join_answer``).

An answer tail is the JSON of ``{"ats": .., "locations": [..]}`` without its opening
brace; a read puts ``{"sku":..,"channel":..,`` in front of it (``render_answer``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from availability.ats import LocationAvailability, SkuAvailability

#: Field holding the channels some location has a buffer for (space-separated);
#: present exactly when the record exists.
CHANNELS_FIELD = b"c"
#: Prefixes of the per-location fields and of the totals.
DEFAULT_PREFIX = b"a:"
CHANNEL_PREFIX = b"b:"
TOTAL_PREFIX = b"t:"
DEFAULT_TOTAL = b"t:*"
#: A write's kind (its announcement says the same): the SKU's every location, or
#: only the locations it names.
WHOLE = b"="
PARTIAL = b"+"


def location_fragment(loc: LocationAvailability, channel: str) -> bytes:
    """The location's object in a read answer for ``channel`` (contract section 6)."""
    buffer = loc.channel_buffers.get(channel, 0) if loc.channel_buffers else 0
    ats = loc.on_hand - loc.reserved - loc.safety_stock - buffer
    return orjson.dumps(
        {
            "location_id": loc.location_id,
            "on_hand": loc.on_hand,
            "reserved": loc.reserved,
            "in_transit": loc.in_transit,
            "damaged": loc.damaged,
            "safety_stock": loc.safety_stock,
            "buffer": buffer,
            "ats": ats if ats > 0 else 0,
        }
    )


def location_data(loc: LocationAvailability) -> bytes:
    """``LocationAvailability.to_data`` as JSON (what announcements carry)."""
    return orjson.dumps(loc.to_data())


def answer_tail(availability: SkuAvailability, channel: str) -> bytes:
    """The answer tail of a whole SKU computed from its figures (the slow path: reads
    while reservation holds count)."""
    fragments = [location_fragment(loc, channel) for loc in availability.locations]
    total = sum(loc.ats(channel) for loc in availability.locations)
    return tail_from(total, fragments)


def tail_from(total: int | bytes, fragments: Sequence[bytes]) -> bytes:
    number = total if isinstance(total, bytes) else b"%d" % total
    return b'"ats":' + number + b',"locations":[' + b",".join(fragments) + b"]}"


@dataclass(frozen=True, slots=True)
class RecordWrite:
    """One call of the write script: the SKU's every location (``whole``) or the
    locations that changed; ``args`` follow the script's fixed arguments."""

    sku: str
    whole: bool
    args: list[bytes]


def _location_args(loc: LocationAvailability) -> list[bytes]:
    """``loc, data, a: fragment, k, (channel, b: fragment) * k``."""
    channels = sorted(loc.channel_buffers) if loc.channel_buffers else []
    args = [
        loc.location_id.encode(),
        location_data(loc),
        location_fragment(loc, ""),  # "" is no valid channel: buffer 0
        b"%d" % len(channels),
    ]
    for channel in channels:
        args.append(channel.encode())
        args.append(location_fragment(loc, channel))
    return args


def encode_whole(availability: SkuAvailability) -> RecordWrite:
    """Every location of the SKU, its channels and totals:
    ``=, c, total count, (total field, total) * n, location count, locations...``."""
    channels = availability.channels()
    totals: list[bytes] = [
        DEFAULT_TOTAL,
        b"%d" % sum(loc.ats("") for loc in availability.locations),
    ]
    for channel in channels:
        totals.append(TOTAL_PREFIX + channel.encode())
        totals.append(b"%d" % sum(loc.ats(channel) for loc in availability.locations))
    args = [WHOLE, " ".join(channels).encode(), b"%d" % (len(totals) // 2), *totals]
    args.append(b"%d" % len(availability.locations))
    for loc in availability.locations:
        args.extend(_location_args(loc))
    return RecordWrite(availability.sku, True, args)


def encode_partial(sku: str, changed: Sequence[LocationAvailability | str]) -> RecordWrite:
    """Only these locations: ``+, location count, locations...``; a location the SKU no
    longer has (a str) is ``loc, '', '', 0``."""
    args = [PARTIAL, b"%d" % len(changed)]
    for loc in sorted(changed, key=_location_id):
        if isinstance(loc, str):
            args.extend((loc.encode(), b"", b"", b"0"))
        else:
            args.extend(_location_args(loc))
    return RecordWrite(sku, False, args)


def _location_id(loc: LocationAvailability | str) -> str:
    return loc if isinstance(loc, str) else loc.location_id


# --- reading fields back ---------------------------------------------------------


def location_from_fragments(
    default: bytes, by_channel: Mapping[str, bytes]
) -> LocationAvailability:
    """A location's figures from its ``a:`` object and its ``b:<ch>:`` objects."""
    figures = orjson.loads(default)
    buffers = {channel: int(orjson.loads(raw)["buffer"]) for channel, raw in by_channel.items()}
    return LocationAvailability(
        figures["location_id"],
        figures["on_hand"],
        figures["reserved"],
        figures["in_transit"],
        figures["damaged"],
        figures["safety_stock"],
        dict(sorted(buffers.items())),
    )


def locations_from_flat(channels: bytes | str, flat: Sequence[Any]) -> list[LocationAvailability]:
    """Locations as the scripts' ``fragments_of`` gives them (``infra.serving_scripts``):
    per location its id, its ``a:`` fragment and a ``b:`` fragment per channel of
    ``channels`` ('' where it has none); sorted by location."""
    names = (channels.decode() if isinstance(channels, bytes) else channels).split()
    stride = 2 + len(names)
    locations = []
    for i in range(0, len(flat), stride):
        by_channel = {
            name: _field_name(flat[i + 2 + n]) for n, name in enumerate(names) if flat[i + 2 + n]
        }
        locations.append(location_from_fragments(_field_name(flat[i + 1]), by_channel))
    return sorted(locations, key=lambda loc: loc.location_id)


def _field_name(field: bytes | str) -> bytes:
    return field.encode() if isinstance(field, str) else field


def record_from_fields(sku: str, fields: Mapping[Any, Any]) -> SkuAvailability | None:
    """The SKU's folded figures from its record's fields (HGETALL); None when there is
    no record (no ``c``)."""
    defaults: dict[bytes, bytes] = {}
    by_channel: dict[bytes, dict[str, bytes]] = {}
    found = False
    for raw_name, value in fields.items():
        name = _field_name(raw_name)
        if name == CHANNELS_FIELD:
            found = True
        elif name.startswith(DEFAULT_PREFIX):
            defaults[name[2:]] = _field_name(value)
        elif name.startswith(CHANNEL_PREFIX):
            channel, _, loc = name[2:].partition(b":")
            by_channel.setdefault(loc, {})[channel.decode()] = _field_name(value)
    if not found:
        return None
    locations = tuple(
        location_from_fragments(defaults[loc], by_channel.get(loc, {})) for loc in sorted(defaults)
    )
    return SkuAvailability(sku, locations, None)


def pairs(reply: Any) -> dict[bytes, bytes]:
    """HGETALL's reply as a dict (RESP2 through a bare command gives a flat list)."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def join_answer(fields: Mapping[bytes, bytes], channel: bytes) -> bytes | None:
    """The answer tail for ``channel`` joined from a record's fields (HGETALL), with
    no JSON parsed; None when there is no record."""
    channels = fields.get(CHANNELS_FIELD)
    if channels is None:
        return None
    own = CHANNEL_PREFIX + channel + b":"
    skip = len(own)
    fragments: dict[bytes, bytes] = {}
    buffered: dict[bytes, bytes] = {}
    for name, value in fields.items():
        if name.startswith(DEFAULT_PREFIX):
            fragments[name[2:]] = value
        elif name.startswith(own):
            buffered[name[skip:]] = value
    if buffered:
        fragments.update(buffered)
    total = fields.get(TOTAL_PREFIX + channel) if channel in channels.split() else None
    if total is None:
        total = fields.get(DEFAULT_TOTAL, b"0")
    return tail_from(total, [fragments[loc] for loc in sorted(fragments)])


# --- announcements ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnnouncedChange:
    """A change announced on a SKU's channel (README "Serving layer"): the folded
    figures of the locations it names (all of them when ``whole``), the locations the
    SKU no longer has, and the SKU's live holds per location."""

    version: int
    whole: bool
    changed: tuple[LocationAvailability, ...]
    removed: tuple[str, ...]
    held: dict[str, int]


def decode_change(message: bytes) -> AnnouncedChange:
    """``<version> <=|+> <locations>`` with `` <held>`` while the SKU has live holds
    (no part holds a space). Raises ValueError (or KeyError, TypeError, IndexError)
    when unreadable."""
    parts = message.split(b" ")
    if len(parts) not in (3, 4):
        raise ValueError(f"{len(parts)} fields")
    if parts[1] not in (WHOLE, PARTIAL):
        raise ValueError(f"unknown kind {parts[1][:8]!r}")
    changed: list[LocationAvailability] = []
    removed: list[str] = []
    listed = orjson.loads(parts[2])
    if not isinstance(listed, list):
        raise TypeError("the locations are not a list")
    for data in listed:
        if not isinstance(data, list):
            raise TypeError("a location is not a list")
        if len(data) == 1:
            removed.append(str(data[0]))
        else:
            changed.append(LocationAvailability.from_data(data))
    held = decode_held(parts[3]) if len(parts) == 4 else {}
    return AnnouncedChange(
        int(parts[0]),
        parts[1] == WHOLE,
        tuple(sorted(changed, key=lambda loc: loc.location_id)),
        tuple(removed),
        held,
    )


def decode_held(held_json: bytes | str) -> dict[str, int]:
    """The live holds per location as the scripts give them ('' for none)."""
    if not held_json:
        return {}
    held = orjson.loads(held_json)
    if not isinstance(held, dict):
        raise TypeError("holds are not an object")
    return {str(loc): int(units) for loc, units in held.items()}


# --- batch answers ---------------------------------------------------------------


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
