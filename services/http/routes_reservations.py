"""``/v1/reservations``: checkout reservations with an atomic reserve (README
"Reservations"; the logic is ``services.reservations.service``).

- ``POST /v1/reservations`` -> 201 (placed; a repeat of a placed request gets the
  first answer), 409 ``insufficient_stock`` (nothing held), 409 ``conflict``, 400, 503
- ``GET /v1/reservations/{id}``, ``DELETE /v1/reservations/{id}`` (204, idempotent),
  ``POST /v1/reservations/{id}/extend`` ``{"expires_in_s": n}``
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response

from availability.holds import MAX_EXPIRES_IN_S, MAX_LINES, MIN_EXPIRES_IN_S, ReservationRequest
from availability.identifiers import DEFAULT_CHANNEL, RULE_ID_PATTERN
from services.auth.scopes import RESERVATIONS_READ, RESERVATIONS_WRITE
from services.http import schemas
from services.http.access import requires
from services.http.errors import ApiError
from services.http.responses import json_response
from services.http.validation import RULE_ID_RULE, read_json, require_rule_id
from services.reservations import requests as checks
from services.reservations.errors import (
    Conflict,
    InProgress,
    InsufficientStock,
    NotActive,
    NotFound,
    ReservationError,
    Unavailable,
)
from services.reservations.requests import InvalidReservation
from services.reservations.service import ReservationService

STATE_ATTRIBUTE = "reservations"
#: Set on the answer to a repeated request (the first answer, replayed).
REPLAYED_HEADER = "Idempotent-Replayed"
INSUFFICIENT_STOCK = "insufficient_stock"
CONFLICT = "conflict"
NOT_ACTIVE = "not_active"

RESERVE_FIELDS = frozenset({"reservation_id", "channel", "expires_in_s", "lines"})
LINE_FIELDS = frozenset({"sku", "quantity", "location_id"})

router = APIRouter(prefix="/v1/reservations", tags=["reservations"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    503: {
        "model": schemas.ErrorBody,
        "description": "Redis or the broker cannot be reached; nothing is held",
    },
    "default": {"model": schemas.ErrorBody, "description": "Error"},
}

IdPath = Annotated[
    str,
    Path(
        description=f"the reservation_id, {RULE_ID_RULE}",
        json_schema_extra={"pattern": f"^{RULE_ID_PATTERN.pattern}$"},
    ),
]


def _service(request: Request) -> ReservationService:
    service = getattr(request.app.state, STATE_ATTRIBUTE, None)
    if not isinstance(service, ReservationService):
        raise RuntimeError("the app's lifespan has not run: no reservation service")
    return service


def _api_error(exc: ReservationError) -> ApiError:
    if isinstance(exc, InsufficientStock):
        return ApiError(409, INSUFFICIENT_STOCK, exc.message)
    if isinstance(exc, Conflict | InProgress):
        return ApiError(409, CONFLICT, exc.message)
    if isinstance(exc, NotActive):
        return ApiError(409, NOT_ACTIVE, exc.message)
    if isinstance(exc, NotFound):
        return ApiError.not_found(exc.message)
    if isinstance(exc, Unavailable):
        return ApiError(503, "unavailable", exc.message, headers={"Retry-After": "1"})
    raise exc


def _expires_in(value: object, field: str = "expires_in_s") -> int:
    try:
        return checks.expires_in(value, field)
    except InvalidReservation as exc:
        raise ApiError.invalid(exc.message) from None


def _object(value: object, field: str, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError.invalid(f"{field} must be a JSON object, got {checks.shown(value)}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        where = "" if field == "the body" else f" in {field}"
        raise ApiError.invalid(f"unknown field(s){where}: {', '.join(unknown)}")
    return value


def parse_reserve_request(data: Any) -> ReservationRequest:
    """The body's JSON shape here; its values by the checks the gRPC API shares
    (``services.reservations.requests``)."""
    body = _object(data, "the body", RESERVE_FIELDS)
    for name in ("reservation_id", "expires_in_s", "lines"):
        if name not in body:
            raise ApiError.invalid(f"{name} is required")
    try:
        rid = checks.reservation_id(body["reservation_id"])
        channel = body.get("channel")
        channel = checks.channel(DEFAULT_CHANNEL if channel is None else channel)
        expires_in_s = checks.expires_in(body["expires_in_s"])
        raw_lines = body["lines"]
        checks.line_count(len(raw_lines) if isinstance(raw_lines, list) else 0)
        lines = []
        for index, raw in enumerate(raw_lines):
            where = f"lines[{index}]"
            line = _object(raw, where, LINE_FIELDS)
            if "sku" not in line or "quantity" not in line:
                raise ApiError.invalid(f"{where}.sku and {where}.quantity are required")
            lines.append(checks.line(index, line["sku"], line["quantity"], line.get("location_id")))
        return checks.request(rid, channel, expires_in_s, lines)
    except InvalidReservation as exc:
        raise ApiError.invalid(exc.message) from None


_EXPIRES_SCHEMA = {"type": "integer", "minimum": MIN_EXPIRES_IN_S, "maximum": MAX_EXPIRES_IN_S}
_RESERVE_BODY = {
    "type": "object",
    "required": ["reservation_id", "expires_in_s", "lines"],
    "properties": {
        "reservation_id": {"type": "string", "pattern": f"^{RULE_ID_PATTERN.pattern}$"},
        "channel": {"type": "string", "default": DEFAULT_CHANNEL},
        "expires_in_s": _EXPIRES_SCHEMA,
        "lines": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_LINES,
            "items": {
                "type": "object",
                "required": ["sku", "quantity"],
                "properties": {
                    "sku": {"type": "string"},
                    "quantity": {"type": "integer", "minimum": 1},
                    "location_id": {
                        "type": "string",
                        "description": "where to hold; absent: the location with the most"
                        " units available for the channel",
                    },
                },
            },
        },
    },
}


@router.post(
    "",
    summary="Hold stock for a checkout, all lines or none",
    description=(
        "Checks and holds every line atomically against the figures and every other "
        "hold, publishes one `reservation.created` per line and answers once the broker "
        "has acknowledged them. The same request again (same `reservation_id` and body) "
        "gets the first answer again; another body under the id is 409 "
        "`conflict`. A line without `location_id` goes to the location with the most "
        "units available for the channel (lines are not split)."
    ),
    status_code=201,
    response_model=None,
    openapi_extra={
        **requires(RESERVATIONS_WRITE),
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _RESERVE_BODY}},
        },
    },
    responses={
        201: {
            "description": "Every line is held: each line's location and the expiry (a"
            " repeat gets the first answer, with `Idempotent-Replayed: true`)"
        },
        400: {"model": schemas.ErrorBody, "description": "Invalid body (the field is named)"},
        409: {
            "model": schemas.ErrorBody,
            "description": "`insufficient_stock` (with `lines`: asked and available per"
            " line; nothing held) or `conflict`",
        },
        **_ERRORS,
    },
)
async def reserve(request: Request) -> Response:
    parsed = parse_reserve_request(await read_json(request))
    try:
        answer, repeated = await _service(request).reserve(parsed)
    except InsufficientStock as exc:
        body = {"error": {"code": INSUFFICIENT_STOCK, "message": exc.message}, "lines": exc.lines}
        return json_response(body, 409)
    except ReservationError as exc:
        raise _api_error(exc) from None
    headers = {REPLAYED_HEADER: "true"} if repeated else None
    return json_response(answer, 201, headers)


@router.get(
    "/{reservation_id}",
    summary="A reservation made through this API",
    description="Its lines and locations, expiry and status: `held`, `released` or `expired`.",
    response_model=None,
    openapi_extra=requires(RESERVATIONS_READ, RESERVATIONS_WRITE),
    responses={404: {"model": schemas.ErrorBody, "description": "No such reservation"}, **_ERRORS},
)
async def get_reservation(reservation_id: IdPath, request: Request) -> Response:
    require_rule_id(reservation_id, "reservation_id")
    try:
        return json_response(await _service(request).get(reservation_id))
    except ReservationError as exc:
        raise _api_error(exc) from None


@router.delete(
    "/{reservation_id}",
    summary="Release a reservation (idempotent)",
    description="Frees the held units at once and publishes `reservation.released`.",
    status_code=204,
    response_model=None,
    openapi_extra=requires(RESERVATIONS_WRITE),
    responses={404: {"model": schemas.ErrorBody, "description": "No such reservation"}, **_ERRORS},
)
async def release_reservation(reservation_id: IdPath, request: Request) -> Response:
    require_rule_id(reservation_id, "reservation_id")
    try:
        await _service(request).release(reservation_id)
    except ReservationError as exc:
        raise _api_error(exc) from None
    return Response(status_code=204)


@router.post(
    "/{reservation_id}/extend",
    summary="Set a held reservation's expiry to `expires_in_s` seconds from now",
    description="Publishes a newer `reservation.created` of every line with the new expiry.",
    response_model=None,
    openapi_extra={
        **requires(RESERVATIONS_WRITE),
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["expires_in_s"],
                        "properties": {"expires_in_s": _EXPIRES_SCHEMA},
                    }
                }
            },
        },
    },
    responses={
        404: {"model": schemas.ErrorBody, "description": "No such reservation"},
        409: {"model": schemas.ErrorBody, "description": "`not_active`: released or expired"},
        **_ERRORS,
    },
)
async def extend_reservation(reservation_id: IdPath, request: Request) -> Response:
    require_rule_id(reservation_id, "reservation_id")
    body = _object(await read_json(request), "the body", frozenset({"expires_in_s"}))
    if "expires_in_s" not in body:
        raise ApiError.invalid("expires_in_s is required")
    try:
        answer = await _service(request).extend(reservation_id, _expires_in(body["expires_in_s"]))
    except ReservationError as exc:
        raise _api_error(exc) from None
    return json_response(answer)
