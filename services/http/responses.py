"""Small response helpers: every body is JSON, encoded with orjson."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import Response

JSON_MEDIA_TYPE = "application/json"


def raw_json(body: bytes, status_code: int = 200) -> Response:
    """A response whose body is already JSON (the serving records are stored that way)."""
    return Response(content=body, status_code=status_code, media_type=JSON_MEDIA_TYPE)


def json_response(
    data: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        content=orjson.dumps(data),
        status_code=status_code,
        media_type=JSON_MEDIA_TYPE,
        headers=headers,
    )


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def error_response(
    status_code: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    return json_response(error_body(code, message), status_code, headers)
