"""``/v1/rules``: safety-stock and channel-buffer rules (contract section 4).

The rules topic is the source of truth. Every read first catches up with it, so a
client reads its own writes whichever replica answers; broker trouble gives 503.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response

from availability.identifiers import RULE_ID_PATTERN
from availability.rules import InvalidRule, parse_rule
from infra.audit import Actor, AuditLog
from infra.audit_relay import rule_audit_id
from infra.rules_log import RuleConflict, TooManyRules
from services.auth.scopes import RULES_READ, RULES_WRITE
from services.http import schemas
from services.http.access import requires
from services.http.actors import REQUEST_ID_HEADER, ActorDep
from services.http.deps import RulesDep, ServicesDep
from services.http.errors import LIMIT_EXCEEDED, SCOPE_CONFLICT, ApiError
from services.http.responses import json_response
from services.http.validation import RULE_ID_RULE, read_json, require_rule_id

router = APIRouter(prefix="/v1/rules", tags=["rules"])

#: The path parameter, documented with the pattern ``require_rule_id`` checks (the
#: check itself stays in the route, for its message).
RuleIdPath = Annotated[
    str,
    Path(
        description=f"the rule's id, {RULE_ID_RULE}",
        json_schema_extra={"pattern": f"^{RULE_ID_PATTERN.pattern}$"},
    ),
]

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
async def get_rule(rule_id: RuleIdPath, rules: RulesDep) -> Response:
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
        409: {
            "model": schemas.ErrorBody,
            "description": "Another rule holds this scope (`scope_conflict`), or the rule"
            " would exceed AVAILABILITY_MAX_RULES (`limit_exceeded`)",
        },
        **_ERRORS,
    },
)
async def put_rule(
    rule_id: RuleIdPath, request: Request, rules: RulesDep, actor: ActorDep
) -> Response:
    try:
        rule = parse_rule(rule_id, await read_json(request))
    except InvalidRule as exc:
        raise ApiError.invalid("; ".join(exc.problems)) from None
    async with rules.operation("storing the rule") as rules_log:
        try:
            stored = await rules_log.put(rule, actor)
        except RuleConflict as exc:
            holder = exc.holder
            raise ApiError(
                409,
                SCOPE_CONFLICT,
                f"rule {holder.rule_id!r} already holds the scope "
                f"({_scope(holder.sku, holder.location_id)})",
            ) from None
        except TooManyRules as exc:
            raise ApiError(409, LIMIT_EXCEEDED, f"{exc}; delete one first") from None
    return json_response(stored.to_data(), headers=_echo(actor))


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
async def delete_rule(rule_id: RuleIdPath, rules: RulesDep, actor: ActorDep) -> Response:
    require_rule_id(rule_id)
    async with rules.operation("deleting the rule") as rules_log:
        deleted = await rules_log.delete(rule_id, actor)
    if not deleted:
        raise ApiError.not_found(f"rule {rule_id!r} does not exist")
    return Response(status_code=204, headers=_echo(actor))


@router.get(
    "/{rule_id}/history",
    summary="Every recorded change of a rule, oldest first",
    description=(
        "From the audit trail (README, Audit): who (the credential's subject and kind),"
        " when, the request's id, and the rule before and after. A change made a moment"
        " ago is waited for (up to a few seconds; 503 if the trail is behind)."
    ),
    response_model=None,
    openapi_extra=requires(RULES_READ, RULES_WRITE),
    responses={
        200: {"model": schemas.RuleHistory, "description": "The rule's changes"},
        **_INVALID_ID,
        404: {"model": schemas.ErrorBody, "description": "No rule and no history"},
        **_ERRORS,
    },
)
async def rule_history(rule_id: RuleIdPath, services: ServicesDep) -> Response:
    require_rule_id(rule_id)
    async with services.rules.operation("reading the rule's history") as rules_log:
        await rules_log.sync()
        latest = next((c.offset for c in reversed(rules_log.changes) if c.rule_id == rule_id), None)
        audit = services.audit
        await audit.sync()
        if latest is not None and not await _recorded(audit, rule_audit_id(latest)):
            raise ApiError.unavailable(
                "the audit trail has not recorded the rule's latest change yet; retry"
            )
        exists = rules_log.book.get(rule_id) is not None
    history = audit.history(f"rule:{rule_id}")
    if not history and not exists:
        raise ApiError.not_found(f"rule {rule_id!r} has no history")
    return json_response(
        {
            "rule_id": rule_id,
            "history": [{name: entry.get(name) for name in HISTORY_FIELDS} for entry in history],
        }
    )


HISTORY_FIELDS = ("audit_id", "at", "actor", "action", "before", "after")
#: Seconds a history request waits for the relay to record the rule's latest change.
HISTORY_WAIT = 5.0


async def _recorded(audit: AuditLog, audit_id: str) -> bool:
    deadline = asyncio.get_running_loop().time() + HISTORY_WAIT
    while not audit.has(audit_id):
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
        await audit.sync()
    return True


def _echo(actor: Actor) -> dict[str, str]:
    return {REQUEST_ID_HEADER: actor.request_id or ""}
