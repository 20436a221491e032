"""Dead-letter records (contract section 2), shared by the worker (events it cannot
apply) and the HTTP API (Shopify order webhooks it cannot map, README "Shopify order
webhooks")."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

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
    context: Mapping[str, Any] | None = None,
) -> bytes:
    """The JSON value of a dead letter; its Kafka key is the original message's key.

    ``partition`` and ``offset`` are -1 for a message that never was on ``topic`` (a
    webhook's event that could not be completed). ``context``, when given, is added as
    it is (readers ignore fields they do not know)."""
    record: dict[str, Any] = {
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
    if context is not None:
        record["context"] = dict(context)
    return orjson.dumps(record)
