"""The HTTP resource of a policy log (``infra.policy_log``): list, read, create or
replace, delete, and the audited history, with one behaviour for every kind of policy
(``/v1/rules``, ``/v1/push-policies``).

The policy's topic is the source of truth. Every read first catches up with it, so a
client reads its own writes whichever replica answers; broker trouble gives 503. A
scope holds at most one policy (409 ``scope_conflict``); a new policy beyond the
deployment's limit is 409 ``limit_exceeded``. Writes answer ``X-Request-Id`` and are
recorded by the audit relay; ``/{id}/history`` waits (up to ``HISTORY_WAIT``) for the
latest change to be recorded. Scopes: ``rules:write`` to change, ``rules:read`` or
``rules:write`` to read.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel

from availability.identifiers import RULE_ID_PATTERN
from infra.audit import Actor, AuditLog
from infra.policy_log import PolicyLog, ScopeConflict, TooManyPolicies
from services.auth.scopes import RULES_READ, RULES_WRITE
from services.http import schemas
from services.http.access import requires
from services.http.actors import REQUEST_ID_HEADER, ActorDep
from services.http.deps import ServicesDep
from services.http.errors import LIMIT_EXCEEDED, SCOPE_CONFLICT, ApiError
from services.http.resources import Services
from services.http.responses import json_response
from services.http.validation import RULE_ID_RULE, read_json, require_rule_id

HISTORY_FIELDS = ("audit_id", "at", "actor", "action", "before", "after")
#: Seconds a history request waits for the relay to record the latest change.
HISTORY_WAIT = 5.0

_ERRORS: dict[int | str, dict[str, Any]] = {
    503: {"model": schemas.ErrorBody, "description": "The broker cannot be reached"},
    "default": {"model": schemas.ErrorBody, "description": "Error"},
}


@dataclass(frozen=True)
class PolicyResource:
    """What differs between two kinds of policy: names, the log, the document's models."""

    prefix: str  # /v1/rules
    tag: str
    noun: str  # "rule": messages and summaries
    list_key: str  # {"rules": [...]}
    id_name: str  # the path parameter: rule_id
    limit_setting: str  # the variable that sets the limit, for the document
    put_description: str
    log_of: Callable[[Services], PolicyLog[Any]]
    item: type[BaseModel]
    body: type[BaseModel]
    listing: type[BaseModel]
    history: type[BaseModel]


def policy_router(resource: PolicyResource) -> APIRouter:
    router = APIRouter(prefix=resource.prefix, tags=[resource.tag])
    noun, id_name = resource.noun, resource.id_name
    path = f"/{{{id_name}}}"
    # The path parameter under one name here, the resource's own in the document, with
    # the pattern require_rule_id checks (the check stays in the route, for its message).
    IdPath = Annotated[
        str,
        Path(
            alias=id_name,
            description=f"the {noun}'s id, {RULE_ID_RULE}",
            json_schema_extra={"pattern": f"^{RULE_ID_PATTERN.pattern}$"},
        ),
    ]
    invalid_id: dict[int | str, dict[str, Any]] = {
        400: {"model": schemas.ErrorBody, "description": f"Invalid {id_name}"}
    }
    absent: dict[int | str, dict[str, Any]] = {
        404: {"model": schemas.ErrorBody, "description": f"No {noun} with this {id_name}"}
    }

    def require_id(value: str) -> str:
        return require_rule_id(value, id_name)

    @router.get(
        "",
        summary=f"All {resource.list_key}, sorted by {id_name}",
        response_model=None,
        openapi_extra=requires(RULES_READ, RULES_WRITE),
        responses={200: {"model": resource.listing, "description": "Every one"}, **_ERRORS},
    )
    async def list_all(services: ServicesDep) -> Response:
        log = resource.log_of(services)
        async with services.rules.operation(f"listing the {resource.list_key}"):
            await log.sync()
            listed = log.book.all()
        return json_response({resource.list_key: [log.to_data(item) for item in listed]})

    @router.get(
        path,
        summary=f"One {noun}",
        response_model=None,
        openapi_extra=requires(RULES_READ, RULES_WRITE),
        responses={
            200: {"model": resource.item, "description": f"The {noun}"},
            **invalid_id,
            **absent,
            **_ERRORS,
        },
    )
    async def get_one(item_id: IdPath, services: ServicesDep) -> Response:
        require_id(item_id)
        log = resource.log_of(services)
        async with services.rules.operation(f"reading the {noun}"):
            await log.sync()
            found = log.book.get(item_id)
        if found is None:
            raise ApiError.not_found(f"{noun} {item_id!r} does not exist")
        return json_response(log.to_data(found))

    @router.put(
        path,
        summary=f"Create or replace a {noun}",
        description=resource.put_description,
        response_model=None,
        openapi_extra={
            **requires(RULES_WRITE),
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": resource.body.model_json_schema()}},
            },
        },
        responses={
            200: {"model": resource.item, "description": f"The stored {noun}"},
            400: {
                "model": schemas.ErrorBody,
                "description": f"Malformed JSON or an invalid {noun}",
            },
            409: {
                "model": schemas.ErrorBody,
                "description": f"Another {noun} holds this scope (`scope_conflict`), or the"
                f" {noun} would exceed {resource.limit_setting} (`limit_exceeded`)",
            },
            **_ERRORS,
        },
    )
    async def put_one(
        item_id: IdPath, request: Request, services: ServicesDep, actor: ActorDep
    ) -> Response:
        log = resource.log_of(services)
        try:
            policy = log.parse(item_id, await read_json(request))
        except ValueError as exc:  # the domain's Invalid* errors list their problems
            problems = getattr(exc, "problems", None) or [str(exc)]
            raise ApiError.invalid("; ".join(problems)) from None
        async with services.rules.operation(f"storing the {noun}"):
            try:
                stored = await log.put(policy, actor)
            except ScopeConflict as exc:
                holder = exc.holder
                raise ApiError(
                    409,
                    SCOPE_CONFLICT,
                    f"{noun} {log.id_of(holder)!r} already holds the scope "
                    f"(sku={holder.sku or 'any'}, location_id={holder.location_id or 'any'})",
                ) from None
            except TooManyPolicies as exc:
                raise ApiError(409, LIMIT_EXCEEDED, f"{exc}; delete one first") from None
        return json_response(log.to_data(stored), headers=_echo(actor))

    @router.delete(
        path,
        summary=f"Delete a {noun}",
        status_code=204,
        response_model=None,
        openapi_extra=requires(RULES_WRITE),
        responses={204: {"description": "Deleted"}, **invalid_id, **absent, **_ERRORS},
    )
    async def delete_one(item_id: IdPath, services: ServicesDep, actor: ActorDep) -> Response:
        require_id(item_id)
        log = resource.log_of(services)
        async with services.rules.operation(f"deleting the {noun}"):
            deleted = await log.delete(item_id, actor)
        if not deleted:
            raise ApiError.not_found(f"{noun} {item_id!r} does not exist")
        return Response(status_code=204, headers=_echo(actor))

    @router.get(
        f"{path}/history",
        summary=f"Every recorded change of a {noun}, oldest first",
        description=(
            "From the audit trail (README, Audit): who (the credential's subject and kind),"
            f" when, the request's id, and the {noun} before and after. A change made a"
            " moment ago is waited for (up to a few seconds; 503 if the trail is behind)."
        ),
        response_model=None,
        openapi_extra=requires(RULES_READ, RULES_WRITE),
        responses={
            200: {"model": resource.history, "description": f"The {noun}'s changes"},
            **invalid_id,
            404: {"model": schemas.ErrorBody, "description": f"No {noun} and no history"},
            **_ERRORS,
        },
    )
    async def history(item_id: IdPath, services: ServicesDep) -> Response:
        require_id(item_id)
        log = resource.log_of(services)
        async with services.rules.operation(f"reading the {noun}'s history"):
            await log.sync()
            latest = log.latest_change(item_id)
            audit = services.audit
            await audit.sync()
            if latest is not None and not await _recorded(audit, log.audit_id(latest)):
                raise ApiError.unavailable(
                    f"the audit trail has not recorded the {noun}'s latest change yet; retry"
                )
            exists = log.book.get(item_id) is not None
        entries = audit.history(log.resource(item_id))
        if not entries and not exists:
            raise ApiError.not_found(f"{noun} {item_id!r} has no history")
        return json_response(
            {
                id_name: item_id,
                "history": [
                    {name: entry.get(name) for name in HISTORY_FIELDS} for entry in entries
                ],
            }
        )

    return router


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
