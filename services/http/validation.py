"""Checks of request values with the contract's validators; each failure raises
``ApiError`` 400 whose message names the field and says what it must be."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import Request

from availability.display import preview
from availability.identifiers import DEFAULT_CHANNEL, is_channel, is_location, is_rule_id, is_sku
from services.http.errors import PAYLOAD_TOO_LARGE, ApiError

MAX_BATCH_SKUS = 500
#: Largest request body accepted (a batch of 500 of the longest SKUs is ~70 KB).
MAX_BODY_BYTES = 1024 * 1024

BATCH_FIELDS = frozenset({"skus", "channel"})

SKU_RULE = "1-128 characters of [A-Za-z0-9._:/-]"
LOCATION_RULE = "1-64 characters of [A-Za-z0-9._:/-]"
CHANNEL_RULE = "1-32 characters of [a-z0-9_-]"
RULE_ID_RULE = "1-128 characters of [A-Za-z0-9._:-]"


def _shown(value: object) -> str:
    # Bounded whatever the value: a body nested 1,000 deep must give 400, not 500.
    return preview(value, 80)


def _require(value: object, valid: Callable[[object], bool], rule: str, field: str) -> str:
    if not valid(value):
        raise ApiError.invalid(f"{field} must be {rule}, got {_shown(value)}")
    assert isinstance(value, str)
    return value


def require_sku(value: object, field: str = "sku") -> str:
    return _require(value, is_sku, SKU_RULE, field)


def require_channel(value: object, field: str = "channel") -> str:
    return _require(value, is_channel, CHANNEL_RULE, field)


def require_location(value: object, field: str = "location_id") -> str:
    return _require(value, is_location, LOCATION_RULE, field)


def require_rule_id(value: object, field: str = "rule_id") -> str:
    return _require(value, is_rule_id, RULE_ID_RULE, field)


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body; 413 ``payload_too_large`` beyond ``limit`` bytes."""
    too_large = ApiError(413, PAYLOAD_TOO_LARGE, f"the request body exceeds {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int = MAX_BODY_BYTES) -> Any:
    return parse_json(await read_body(request, limit))


def parse_json(body: bytes) -> Any:
    """The request body as JSON; ``malformed_json`` when it is not."""
    if not body:
        raise ApiError.malformed_json("the request body is empty; a JSON object is expected")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError.malformed_json(f"the request body is not valid JSON: {exc}") from None


def parse_batch_request(data: Any) -> tuple[list[str], str]:
    """``{"skus": [...], "channel": "online"}`` -> (skus, channel)."""
    if not isinstance(data, dict):
        raise ApiError.invalid('the body must be a JSON object {"skus": [...], "channel": ...}')
    unknown = sorted(set(data) - BATCH_FIELDS)
    if unknown:
        raise ApiError.invalid(f"unknown field(s): {', '.join(unknown)}")
    if "skus" not in data:
        raise ApiError.invalid("skus is required: a list of at most 500 SKUs")
    skus = data["skus"]
    if not isinstance(skus, list):
        raise ApiError.invalid(f"skus must be a list of SKUs, got {type(skus).__name__}")
    if len(skus) > MAX_BATCH_SKUS:
        raise ApiError.invalid(f"skus holds {len(skus)} SKUs; at most {MAX_BATCH_SKUS} allowed")
    for index, sku in enumerate(skus):
        require_sku(sku, f"skus[{index}]")
    channel = data.get("channel")
    if channel is None:
        channel = DEFAULT_CHANNEL
    return skus, require_channel(channel)
