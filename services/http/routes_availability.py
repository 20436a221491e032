"""``GET /v1/availability/{sku}`` and ``POST /v1/availability:batch``.

The hot path parses nothing: one Redis round trip fetches the answer tail stored
ready to send, and ``render_answer`` puts the SKU and channel in front of it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from availability.identifiers import DEFAULT_CHANNEL, SKU_PATTERN
from infra.records import batch_items, render_answer
from infra.store import AvailabilityStore
from services.auth.scopes import AVAILABILITY_READ
from services.http import schemas
from services.http.access import requires
from services.http.deps import StoreDep
from services.http.errors import ApiError
from services.http.responses import raw_json
from services.http.validation import (
    CHANNEL_RULE,
    LOCATION_RULE,
    MAX_BATCH_SKUS,
    SKU_RULE,
    parse_batch_request,
    read_json,
    require_channel,
    require_location,
    require_sku,
)

router = APIRouter(prefix="/v1", tags=["availability"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    503: {
        "model": schemas.ErrorBody,
        "description": "Redis cannot be reached, or a SKU asked for has no record while"
        " the serving layer is being rebuilt (with `Retry-After`)",
    },
    "default": {"model": schemas.ErrorBody, "description": "Error"},
}


@router.get(
    "/availability/{sku:path}",
    summary="Available to sell of one SKU on a channel",
    description=(
        "Per location the stock figures, safety stock, the channel's buffer and `ats`; "
        "the top-level `ats` is their sum. Locations are sorted by `location_id`. "
        "The SKU may contain `/`."
    ),
    response_model=None,
    openapi_extra=requires(AVAILABILITY_READ),
    responses={
        200: {"model": schemas.Availability, "description": "The SKU's availability"},
        400: {"model": schemas.ErrorBody, "description": "Invalid SKU, channel or location"},
        404: {"model": schemas.ErrorBody, "description": "The SKU has never been seen"},
        **_ERRORS,
    },
)
async def get_availability(
    sku: Annotated[
        str,
        Path(
            description=f"the SKU, {SKU_RULE}",
            json_schema_extra={"pattern": f"^{SKU_PATTERN.pattern}$"},
        ),
    ],
    store: StoreDep,
    channel: Annotated[str, Query(description=f"sales channel, {CHANNEL_RULE}")] = DEFAULT_CHANNEL,
    location_id: Annotated[
        str | None,
        Query(description=f"only this location ({LOCATION_RULE}); ats 0 if it has no stock"),
    ] = None,
) -> Response:
    require_sku(sku)
    require_channel(channel)
    if location_id is None:
        tail = await store.read_tail(sku, channel)
        if tail is None:
            raise await _not_found(store, sku)
        return raw_json(render_answer(sku, channel, tail))
    require_location(location_id)
    tail = await store.read_location_tail(sku, channel, location_id)
    if tail is None:
        raise await _not_found(store, sku)
    return raw_json(render_answer(sku, channel, tail))


async def _not_found(store: AvailabilityStore, sku: str) -> ApiError:
    """404, unless the SKU may only not have been rewritten yet (streams.rebuild)."""
    incomplete = await store.incomplete_serving_layer()
    if incomplete is not None:
        return ApiError.rebuilding(incomplete)
    return ApiError.not_found(f"sku {sku!r} has never been seen")


@router.post(
    "/availability:batch",
    summary=f"Available to sell of up to {MAX_BATCH_SKUS} SKUs on one channel",
    description=(
        "Items come in request order, duplicates included; a SKU that has never been "
        'seen gives `{"sku": .., "ats": 0, "locations": []}`. One Redis round trip.'
    ),
    response_model=None,
    openapi_extra={
        **requires(AVAILABILITY_READ),
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schemas.BatchRequest.model_json_schema()}},
        },
    },
    responses={
        200: {"model": schemas.BatchAnswer, "description": "One item per requested SKU"},
        400: {
            "model": schemas.ErrorBody,
            "description": "Malformed JSON, unknown field, invalid SKU or channel, too many SKUs",
        },
        **_ERRORS,
    },
)
async def batch_availability(request: Request, store: StoreDep) -> Response:
    skus, channel = parse_batch_request(await read_json(request))
    tails = await store.read_tails(skus, channel) if skus else []
    if None in tails:
        incomplete = await store.incomplete_serving_layer()
        if incomplete is not None:
            raise ApiError.rebuilding(incomplete)
    return raw_json(batch_items(skus, channel, tails))
