"""Error bodies and exception handlers.

Every 4xx/5xx answer is ``{"error": {"code": str, "message": str}}``:

- 400 ``invalid_argument``: a path, query or body value is wrong (the message says which)
- 400 ``malformed_json``: the body is not JSON
- 404 ``not_found``: unknown SKU, rule or route
- 405 ``method_not_allowed``: with an ``Allow`` header
- 401 ``unauthenticated``, 403 ``permission_denied``: ``services.http.access``
- 409 ``scope_conflict``: another rule holds the rule's (sku, location_id) scope
- 409 ``limit_exceeded``: a new rule beyond ``AVAILABILITY_MAX_RULES``
- 413 ``payload_too_large``: the request body exceeds 1 MiB
- 503 ``unavailable``: Redis or the broker cannot be reached, or the serving layer is
  being rebuilt and the SKU asked for has no record yet (``Retry-After: 1``)
- 500 ``internal``: anything unexpected (logged; no details in the body)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from infra.redis_client import STORE_DOWN
from services.http.responses import error_response

log = logging.getLogger(__name__)

INVALID_ARGUMENT = "invalid_argument"
MALFORMED_JSON = "malformed_json"
NOT_FOUND = "not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"
SCOPE_CONFLICT = "scope_conflict"
LIMIT_EXCEEDED = "limit_exceeded"
PAYLOAD_TOO_LARGE = "payload_too_large"
UNAVAILABLE = "unavailable"
INTERNAL = "internal"

_CODE_BY_STATUS: dict[int, str] = {
    400: INVALID_ARGUMENT,
    404: NOT_FOUND,
    405: METHOD_NOT_ALLOWED,
    409: SCOPE_CONFLICT,
    413: PAYLOAD_TOO_LARGE,
    500: INTERNAL,
    503: UNAVAILABLE,
}


class ApiError(Exception):
    """Raised by routes; turned into the error body with ``status_code``."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = headers

    @classmethod
    def invalid(cls, message: str) -> ApiError:
        return cls(400, INVALID_ARGUMENT, message)

    @classmethod
    def malformed_json(cls, message: str) -> ApiError:
        return cls(400, MALFORMED_JSON, message)

    @classmethod
    def not_found(cls, message: str) -> ApiError:
        return cls(404, NOT_FOUND, message)

    @classmethod
    def unavailable(cls, message: str) -> ApiError:
        return cls(503, UNAVAILABLE, message)

    @classmethod
    def rebuilding(cls, message: str) -> ApiError:
        """A read that cannot be answered until the serving layer is rebuilt."""
        return cls(503, UNAVAILABLE, message, headers={"Retry-After": "1"})


def code_for_status(status_code: int) -> str:
    """The error code for a status that a route did not name itself."""
    known = _CODE_BY_STATUS.get(status_code)
    if known is not None:
        return known
    phrase = _phrase(status_code)
    if phrase is None:
        return INTERNAL if status_code >= 500 else INVALID_ARGUMENT
    return phrase.lower().replace(" ", "_").replace("-", "_")


def _phrase(status_code: int) -> str | None:
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return None


def _location(loc: Sequence[Any]) -> str:
    """``("query", "channel")`` -> ``channel``; ``("body", "skus", 3)`` -> ``skus[3]``."""
    parts = list(loc[1:]) if loc and loc[0] in {"body", "query", "path", "header"} else list(loc)
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "request"


def describe_validation_errors(errors: Sequence[Any]) -> tuple[str, str]:
    """FastAPI/pydantic validation errors -> (error code, one readable message)."""
    messages: list[str] = []
    for error in errors:
        if not isinstance(error, Mapping):
            messages.append(str(error))
            continue
        if error.get("type") == "json_invalid":
            return MALFORMED_JSON, "the request body is not valid JSON"
        where = _location(error.get("loc", ()))
        messages.append(f"{where}: {error.get('msg', 'invalid value')}")
    return INVALID_ARGUMENT, "; ".join(messages) or "invalid request"


# --- handlers -------------------------------------------------------------------


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.code, exc.message, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    code, message = describe_validation_errors(exc.errors())
    return error_response(400, code, message)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 404:
        message = f"no resource at {request.url.path}"
    elif status == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    elif isinstance(exc.detail, str) and exc.detail:
        message = exc.detail
    else:
        message = _phrase(status) or "error"
    return error_response(status, code_for_status(status), message, exc.headers)


async def _redis_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("redis unavailable during %s %s: %r", request.method, request.url.path, exc)
    return error_response(503, UNAVAILABLE, "the serving store (Redis) cannot be reached")


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, INTERNAL, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    for kind in STORE_DOWN:
        app.add_exception_handler(kind, _redis_unavailable)
    # Exception (not a subclass) goes to the outermost middleware: a last resort.
    app.add_exception_handler(Exception, _internal_error)
