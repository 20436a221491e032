"""Relay connections over the stand-in's rows: ``first``/``after``, ``last``/``before``,
``reverse``, with Shopify-like opaque cursors (base64 of ``{"last_id": ...}``)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

from graphql import GraphQLError

MAX_PAGE: Final = 250
T = TypeVar("T")


def cursor(number: int) -> str:
    raw = json.dumps({"last_id": number, "last_value": str(number)}, separators=(",", ":"))
    return base64.b64encode(raw.encode()).decode()


def _position(value: str, numbers: Sequence[int]) -> int:
    try:
        number = int(json.loads(base64.b64decode(value, validate=True))["last_id"])
        return list(numbers).index(number)
    except (ValueError, KeyError, TypeError) as exc:
        raise GraphQLError("Invalid cursor for current pagination sort.") from exc


def connection(
    rows: Sequence[T], args: dict[str, Any], number: Callable[[T], int]
) -> dict[str, Any]:
    first, last = args.get("first"), args.get("last")
    if first is None and last is None:
        raise GraphQLError("you must provide one of first or last")
    if first is not None and last is not None:
        raise GraphQLError("providing both first and last is not supported")
    size = first if first is not None else last
    assert isinstance(size, int)
    if size < 0:
        raise GraphQLError("first and last must be non-negative")
    if size > MAX_PAGE:
        raise GraphQLError(f"first and last cannot exceed {MAX_PAGE} (Shopify's page size limit)")
    ordered = list(rows)[::-1] if args.get("reverse") else list(rows)
    numbers = [number(row) for row in ordered]
    start, end = 0, len(ordered)
    if args.get("after"):
        start = _position(args["after"], numbers) + 1
    if args.get("before"):
        end = _position(args["before"], numbers)
    window = ordered[start:end]
    if first is not None:
        page, has_next, has_previous = window[:first], len(window) > first, start > 0
    else:
        page = window[max(0, len(window) - size) :]
        has_next, has_previous = end < len(ordered), len(window) > size
    edges = [{"cursor": cursor(number(row)), "node": row} for row in page]
    return {
        "edges": edges,
        "nodes": page,
        "pageInfo": {
            "hasNextPage": has_next,
            "hasPreviousPage": has_previous,
            "startCursor": edges[0]["cursor"] if edges else None,
            "endCursor": edges[-1]["cursor"] if edges else None,
        },
    }
