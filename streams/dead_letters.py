"""Dead-letter records (contract section 2)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson


def dead_letter_record(
    *,
    value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    reason: str,
    event_id: str | None = None,
    sku: str | None = None,
) -> bytes:
    """The JSON value of a dead letter; its Kafka key is the original message's key."""
    return orjson.dumps(
        {
            "original": base64.b64encode(value or b"").decode("ascii"),
            "original_is_null": value is None,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "reason": reason,
            "event_id": event_id,
            "sku": sku,
            "dead_lettered_at": datetime.now(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
        }
    )
