"""Dead-letter records (contract section 2; README "Dead letters"), shared by the
worker (events it cannot apply) and the HTTP API (Shopify order webhooks it cannot
map, README "Shopify order webhooks").

A dead letter must itself be a record the broker takes, whatever the event was: the
reason is cut to ``MAX_REASON_CHARS``, and when the original (base64 in the JSON
value) would make the record larger than ``max_bytes`` (``AVAILABILITY_DEAD_LETTER_MAX_BYTES``,
Kafka's ``message.max.bytes`` by default) only its start is kept, with
``original_truncated``, ``original_size`` and ``original_sha256`` of the whole
original, so that an operator can still tell which event it was. An oversized key
is treated alike (``key_truncated``, ``key_size``, ``key_sha256``).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from availability.display import clip

#: Characters of a reason kept in a dead letter (and in its log line).
MAX_REASON_CHARS = 1000
#: Characters of an event_id or sku kept (valid ones have at most 128).
MAX_ID_CHARS = 200
#: Bytes a record takes beyond its key and value in a Kafka record batch (the batch
#: header, the record's varints and timestamp), with room to spare.
RECORD_OVERHEAD = 1024


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A dead-letter record ready to send: its key and JSON value."""

    key: bytes | None
    value: bytes


def failure_reason(stage: str, exc: BaseException) -> str:
    """The reason of an event dead-lettered because handling it failed unexpectedly
    (kind ``internal_error``): where, the exception's type and its message."""
    return clip(f"internal error while {stage}: {type(exc).__name__}: {exc}", MAX_REASON_CHARS)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dead_letter_record(
    *,
    key: bytes | None,
    value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    reason: str,
    event_id: str | None = None,
    sku: str | None = None,
    max_bytes: int,
    context: Mapping[str, Any] | None = None,
) -> DeadLetterRecord:
    """The dead letter of one message: its Kafka key is the original's (cut when it
    alone would not fit), its value this JSON, at most ``max_bytes`` in all.

    ``partition`` and ``offset`` are -1 for a message that never was on ``topic`` (a
    webhook's event that could not be completed). ``context``, when given, is added as
    it is (readers ignore fields they do not know); keep it small."""
    document: dict[str, Any] = {
        "original": "",
        "original_is_null": value is None,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "reason": clip(reason, MAX_REASON_CHARS),
        "event_id": None if event_id is None else clip(event_id, MAX_ID_CHARS),
        "sku": None if sku is None else clip(sku, MAX_ID_CHARS),
        "dead_lettered_at": datetime.now(UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
    }
    if context is not None:
        document["context"] = dict(context)
    budget = max_bytes - RECORD_OVERHEAD
    if key is not None and len(key) > budget // 4:
        # A key this large is never a SKU; keep its start, say what it was.
        document.update(key_truncated=True, key_size=len(key), key_sha256=_digest(key))
        key = key[: budget // 4]
    original = value or b""
    extras = {"original_truncated": True, "original_size": 0, "original_sha256": "0" * 64}
    room = budget - len(key or b"") - len(orjson.dumps({**document, **extras}))
    kept = max(0, room) * 3 // 4  # base64 turns 3 bytes into 4 characters
    if len(original) > kept:
        document.update(
            original_truncated=True,
            original_size=len(original),
            original_sha256=_digest(original),
        )
        original = original[:kept]
    document["original"] = base64.b64encode(original).decode("ascii")
    return DeadLetterRecord(key, orjson.dumps(document))
