"""``/v1/rules``: safety-stock and channel-buffer rules (contract section 4).

The rules topic is the source of truth. Every read first catches up with it, so a
client reads its own writes whichever replica answers; broker trouble gives 503.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from availability.rules import InvalidRule, parse_rule
from infra.rules_log import RuleConflict
from services.auth.scopes import RULES_READ, RULES_WRITE
from services.http import schemas
from services.http.access import requires
from services.http.deps import RulesDep
from services.http.errors import SCOPE_CONFLICT, ApiError
from services.http.responses import json_response
from services.http.validation import read_json, require_rule_id

router = APIRouter(prefix="/v1/rules", tags=["rules"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    503: {"model": schemas.ErrorBody, "description": "The broker cannot be reached"},
    "default": {"model": schemas.ErrorBody, "description": "Error"},
}
_INVALID_ID: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.ErrorBody, "description": "Invalid rule_id"},
}
_ABSENT: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorBody, "description": "No rule with this rule_id"},
}


def _scope(sku: str | None, location_id: str | None) -> str:
    return f"sku={sku or 'any'}, location_id={location_id or 'any'}"


@router.get(
    "",
    summary="All rules, sorted by rule_id",
    response_model=None,
    openapi_extra=requires(RULES_READ, RULES_WRITE),
    responses={200: {"model": schemas.RuleList, "description": "Every rule"}, **_ERRORS},
)
async def list_rules(rules: RulesDep) -> Response:
    async with rules.operation("listing the rules") as rules_log:
        await rules_log.sync()
        listed = rules_log.book.all()
    return json_response({"rules": [rule.to_data() for rule in listed]})


@router.get(
    "/{rule_id}",
    summary="One rule",
    response_model=None,
    openapi_extra=requires(RULES_READ, RULES_WRITE),
    responses={
        200: {"model": schemas.Rule, "description": "The rule"},
        **_INVALID_ID,
        **_ABSENT,
        **_ERRORS,
    },
)
async def get_rule(rule_id: str, rules: RulesDep) -> Response:
    require_rule_id(rule_id)
    async with rules.operation("reading the rule") as rules_log:
        await rules_log.sync()
        rule = rules_log.book.get(rule_id)
    if rule is None:
        raise ApiError.not_found(f"rule {rule_id!r} does not exist")
    return json_response(rule.to_data())


@router.put(
    "/{rule_id}",
    summary="Create or replace a rule",
    description=(
        "The body may omit `rule_id` or repeat the path's. Absent fields mean null. "
        "A scope (sku, location_id) holds at most one rule: a rule for a scope that "
        "another rule holds is refused with 409. Availability reads reflect the change "
        "within a second."
    ),
    response_model=None,
    openapi_extra={
        **requires(RULES_WRITE),
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schemas.RuleBody.model_json_schema()}},
        },
    },
    responses={
        200: {"model": schemas.Rule, "description": "The stored rule"},
        400: {"model": schemas.ErrorBody, "description": "Malformed JSON or an invalid rule"},
        409: {"model": schemas.ErrorBody, "description": "Another rule holds this scope"},
        **_ERRORS,
    },
)
async def put_rule(rule_id: str, request: Request, rules: RulesDep) -> Response:
    try:
        rule = parse_rule(rule_id, await read_json(request))
    except InvalidRule as exc:
        raise ApiError.invalid("; ".join(exc.problems)) from None
    async with rules.operation("storing the rule") as rules_log:
        try:
            stored = await rules_log.put(rule)
        except RuleConflict as exc:
            holder = exc.holder
            raise ApiError(
                409,
                SCOPE_CONFLICT,
                f"rule {holder.rule_id!r} already holds the scope "
                f"({_scope(holder.sku, holder.location_id)})",
            ) from None
    return json_response(stored.to_data())


@router.delete(
    "/{rule_id}",
    summary="Delete a rule",
    status_code=204,
    response_model=None,
    openapi_extra=requires(RULES_WRITE),
    responses={
        204: {"description": "Deleted"},
        **_INVALID_ID,
        **_ABSENT,
        **_ERRORS,
    },
)
async def delete_rule(rule_id: str, rules: RulesDep) -> Response:
    require_rule_id(rule_id)
    async with rules.operation("deleting the rule") as rules_log:
        deleted = await rules_log.delete(rule_id)
    if not deleted:
        raise ApiError.not_found(f"rule {rule_id!r} does not exist")
    return Response(status_code=204)
