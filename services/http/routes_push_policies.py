"""``/v1/push-policies``: when changes are pushed to the shops (README "Shopify push").

The same semantics and errors as ``/v1/rules``: the policies topic is the source of
truth, every read first catches up with it, a scope holds one policy (409
``scope_conflict``), every change is audited (``/history``). Scopes: ``rules:write``
to change, ``rules:read`` or ``rules:write`` to read.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response

from availability.identifiers import RULE_ID_PATTERN
from availability.push_policy import InvalidPushPolicy, parse_push_policy
from infra.policy_log import ScopeConflict, TooManyPolicies
from infra.push_policy_log import PushPolicyLog
from services.auth.scopes import RULES_READ, RULES_WRITE
from services.http import schemas
from services.http.access import requires
from services.http.actors import ActorDep
from services.http.deps import ServicesDep
from services.http.errors import LIMIT_EXCEEDED, SCOPE_CONFLICT, ApiError
from services.http.resources import Services
from services.http.responses import json_response
from services.http.routes_rules import HISTORY_FIELDS, _echo, _recorded
from services.http.schemas_push import PushPolicy, PushPolicyBody, PushPolicyHistory, PushPolicyList
from services.http.validation import RULE_ID_RULE, read_json, require_rule_id

router = APIRouter(prefix="/v1/push-policies", tags=["push policies"])

PolicyIdPath = Annotated[
    str,
    Path(
        description=f"the policy's id, {RULE_ID_RULE}",
        json_schema_extra={"pattern": f"^{RULE_ID_PATTERN.pattern}$"},
    ),
]

_ERRORS: dict[int | str, dict[str, Any]] = {
    503: {"model": schemas.ErrorBody, "description": "The broker cannot be reached"},
    "default": {"model": schemas.ErrorBody, "description": "Error"},
}
_INVALID_ID: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.ErrorBody, "description": "Invalid policy_id"},
}
_ABSENT: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorBody, "description": "No policy with this policy_id"},
}


def _policies(services: Services) -> PushPolicyLog:
    if services.push_policies is None:  # pragma: no cover - the app always sets it
        raise ApiError.unavailable("push policies are not served by this process")
    return services.push_policies


def _policy_id(value: str) -> str:
    return require_rule_id(value, "policy_id")


@router.get(
    "",
    summary="All push policies, sorted by policy_id",
    response_model=None,
    openapi_extra=requires(RULES_READ, RULES_WRITE),
    responses={200: {"model": PushPolicyList, "description": "Every policy"}, **_ERRORS},
)
async def list_policies(services: ServicesDep) -> Response:
    policies = _policies(services)
    async with services.rules.operation("listing the push policies"):
        await policies.sync()
        listed = policies.book.all()
    return json_response({"policies": [policy.to_data() for policy in listed]})


@router.get(
    "/{policy_id}",
    summary="One push policy",
    response_model=None,
    openapi_extra=requires(RULES_READ, RULES_WRITE),
    responses={
        200: {"model": PushPolicy, "description": "The policy"},
        **_INVALID_ID,
        **_ABSENT,
        **_ERRORS,
    },
)
async def get_policy(policy_id: PolicyIdPath, services: ServicesDep) -> Response:
    _policy_id(policy_id)
    policies = _policies(services)
    async with services.rules.operation("reading the push policy"):
        await policies.sync()
        policy = policies.book.get(policy_id)
    if policy is None:
        raise ApiError.not_found(f"push policy {policy_id!r} does not exist")
    return json_response(policy.to_data())


@router.put(
    "/{policy_id}",
    summary="Create or replace a push policy",
    description=(
        "The body may omit `policy_id` or repeat the path's. Absent fields mean null. "
        "A scope (sku, location_id) holds at most one policy: a policy for a scope that "
        "another holds is refused with 409. The most specific matching policy applies "
        "whole; with none, every change is pushed at once."
    ),
    response_model=None,
    openapi_extra={
        **requires(RULES_WRITE),
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PushPolicyBody.model_json_schema()}},
        },
    },
    responses={
        200: {"model": PushPolicy, "description": "The stored policy"},
        400: {"model": schemas.ErrorBody, "description": "Malformed JSON or an invalid policy"},
        409: {
            "model": schemas.ErrorBody,
            "description": "Another policy holds this scope (`scope_conflict`), or the policy"
            " would exceed AVAILABILITY_PUSH_MAX_POLICIES (`limit_exceeded`)",
        },
        **_ERRORS,
    },
)
async def put_policy(
    policy_id: PolicyIdPath, request: Request, services: ServicesDep, actor: ActorDep
) -> Response:
    try:
        policy = parse_push_policy(policy_id, await read_json(request))
    except InvalidPushPolicy as exc:
        raise ApiError.invalid("; ".join(exc.problems)) from None
    policies = _policies(services)
    async with services.rules.operation("storing the push policy"):
        try:
            stored = await policies.put(policy, actor)
        except ScopeConflict as exc:
            holder = exc.holder
            raise ApiError(
                409,
                SCOPE_CONFLICT,
                f"push policy {holder.policy_id!r} already holds the scope "
                f"(sku={holder.sku or 'any'}, location_id={holder.location_id or 'any'})",
            ) from None
        except TooManyPolicies as exc:
            raise ApiError(409, LIMIT_EXCEEDED, f"{exc}; delete one first") from None
    return json_response(stored.to_data(), headers=_echo(actor))


@router.delete(
    "/{policy_id}",
    summary="Delete a push policy",
    status_code=204,
    response_model=None,
    openapi_extra=requires(RULES_WRITE),
    responses={204: {"description": "Deleted"}, **_INVALID_ID, **_ABSENT, **_ERRORS},
)
async def delete_policy(
    policy_id: PolicyIdPath, services: ServicesDep, actor: ActorDep
) -> Response:
    _policy_id(policy_id)
    policies = _policies(services)
    async with services.rules.operation("deleting the push policy"):
        deleted = await policies.delete(policy_id, actor)
    if not deleted:
        raise ApiError.not_found(f"push policy {policy_id!r} does not exist")
    return Response(status_code=204, headers=_echo(actor))


@router.get(
    "/{policy_id}/history",
    summary="Every recorded change of a push policy, oldest first",
    description="From the audit trail (README, Audit), as for rules.",
    response_model=None,
    openapi_extra=requires(RULES_READ, RULES_WRITE),
    responses={
        200: {"model": PushPolicyHistory, "description": "The policy's changes"},
        **_INVALID_ID,
        404: {"model": schemas.ErrorBody, "description": "No policy and no history"},
        **_ERRORS,
    },
)
async def policy_history(policy_id: PolicyIdPath, services: ServicesDep) -> Response:
    _policy_id(policy_id)
    policies = _policies(services)
    async with services.rules.operation("reading the push policy's history"):
        await policies.sync()
        latest = policies.latest_change(policy_id)
        audit = services.audit
        await audit.sync()
        if latest is not None and not await _recorded(audit, policies.audit_id(latest)):
            raise ApiError.unavailable(
                "the audit trail has not recorded the policy's latest change yet; retry"
            )
        exists = policies.book.get(policy_id) is not None
    history = audit.history(policies.resource(policy_id))
    if not history and not exists:
        raise ApiError.not_found(f"push policy {policy_id!r} has no history")
    return json_response(
        {
            "policy_id": policy_id,
            "history": [{name: entry.get(name) for name in HISTORY_FIELDS} for entry in history],
        }
    )
