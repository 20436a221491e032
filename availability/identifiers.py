"""Identifier and quantity rules of the contract (section 1)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from availability.display import preview

SKU_PATTERN = re.compile(r"[A-Za-z0-9._:/-]{1,128}")
LOCATION_PATTERN = re.compile(r"[A-Za-z0-9._:/-]{1,64}")
CHANNEL_PATTERN = re.compile(r"[a-z0-9_-]{1,32}")
# Rule ids travel as one URL path segment, so '/' is not allowed in them.
RULE_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")

MAX_ID_LENGTH = 128
# Bounded so that sums over many locations and events stay far inside 64-bit
# integers, which is what JSON consumers and Redis can represent.
MAX_QUANTITY = 1_000_000_000

DEFAULT_CHANNEL = "online"

_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def is_sku(value: object) -> bool:
    return isinstance(value, str) and SKU_PATTERN.fullmatch(value) is not None


def is_location(value: object) -> bool:
    return isinstance(value, str) and LOCATION_PATTERN.fullmatch(value) is not None


def is_channel(value: object) -> bool:
    return isinstance(value, str) and CHANNEL_PATTERN.fullmatch(value) is not None


def is_rule_id(value: object) -> bool:
    return isinstance(value, str) and RULE_ID_PATTERN.fullmatch(value) is not None


def format_timestamp(micros: int) -> str:
    """Integer microseconds since the epoch -> RFC 3339 in UTC (µs precision)."""
    return (_EPOCH + micros * _MICROSECOND).isoformat().replace("+00:00", "Z")


def parse_timestamp(value: str) -> int:
    """RFC 3339 timestamp -> integer microseconds since the epoch (UTC).

    Offsets are normalised to UTC. Digits beyond microseconds are truncated.
    Raises ValueError with a readable message.
    """
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {preview(value)}")
    moment, fraction, offset = match.groups()
    # datetime takes at most six fractional digits.
    text = moment.upper() + "." + (fraction or "0")[:6] + offset.upper()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a valid date and time: {preview(value)}") from None
    return (parsed - _EPOCH) // _MICROSECOND
