"""``POST /admin/api/2026-10/graphql.json``: the pipeline one GraphQL call goes through.

version -> fault (before) -> access token -> document and variables -> requested cost
(at most 1,000) -> leaky bucket (THROTTLED) -> execute on the real schema -> actual cost
(the difference is given back) -> fault (after) -> answer with ``extensions.cost``.

HTTP statuses as Shopify's: 401/403 with ``{"errors": "..."}``, 404 for another API
version, 200 for every GraphQL-level failure (invalid document, THROTTLED,
ACCESS_DENIED, userErrors).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Final

import orjson
from aiohttp import web
from graphql import ExecutionResult, execute

from dev.shopify_admin.context import CallContext, InternalFailure
from dev.shopify_admin.cost import MAX_QUERY_COST, actual_cost, requested_cost
from dev.shopify_admin.errors import (
    NOT_FOUND_BODY,
    UNAUTHORIZED_BODY,
    JsonError,
    forbidden_body,
    from_graphql_error,
    internal_error,
    max_cost_exceeded,
    throttled,
)
from dev.shopify_admin.faults import Fault
from dev.shopify_admin.prepare import Documents, Prepared, Refused, prepare
from dev.shopify_admin.resolvers import check_scopes, resolve_field
from dev.shopify_admin.schema import AdminSchema
from dev.shopify_admin.schema_cache import API_VERSION
from dev.shopify_admin.state import ShopState, StandInState

STATE_KEY: Final = web.AppKey("state", StandInState)
ADMIN_KEY: Final = web.AppKey("admin", AdminSchema)
DOCUMENTS_KEY: Final = web.AppKey("documents", Documents)

_ERROR_PAGES: Final = {
    500: ("application/json", b'{"errors":"Internal Server Error"}'),
    502: ("text/html", b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
    503: ("text/html", b"<html><body><h1>503 Service Unavailable</h1></body></html>"),
}


def _json(body: Any, status: int = 200, request_id: str = "") -> web.Response:
    response = web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", charset="utf-8"
    )
    response.headers["X-Shopify-API-Version"] = API_VERSION
    if request_id:
        response.headers["X-Request-Id"] = request_id
    return response


def _cost(requested: int, actual: int | None, shop: ShopState | None) -> dict[str, Any]:
    cost: dict[str, Any] = {"requestedQueryCost": requested, "actualQueryCost": actual}
    if shop is not None:
        cost["throttleStatus"] = shop.shop.bucket.status()
    return {"cost": cost}


async def _fault_answer(request: web.Request, fault: Fault) -> web.StreamResponse:
    if fault.kind == "drop":
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)  # never reaches the client
    content_type, body = _ERROR_PAGES[fault.status]
    return web.Response(body=body, status=fault.status, content_type=content_type)


def _body(request: web.Request, raw: bytes) -> dict[str, Any]:
    if request.content_type == "application/graphql":
        return {"query": raw.decode("utf-8", "replace")}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise web.HTTPBadRequest(
            body=orjson.dumps({"errors": "Bad Request: body is not JSON"}),
            content_type="application/json",
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            body=orjson.dumps({"errors": "Bad Request: body must be a JSON object"}),
            content_type="application/json",
        )
    return body


class Call:
    """One call's record for the log (never the access token)."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.started = time.monotonic()
        self.entry: dict[str, Any] = {
            "at": time.time(),
            "operationName": body.get("operationName"),
            "query": body.get("query"),
            "variables": body.get("variables"),
        }

    def done(self, state: StandInState, outcome: str, status: int, **more: Any) -> None:
        self.entry.update(outcome=outcome, status=status, **more)
        self.entry["seconds"] = round(time.monotonic() - self.started, 4)
        state.log_call(self.entry)


async def graphql_handler(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    if request.match_info["version"] != API_VERSION:
        return _json(NOT_FOUND_BODY, 404)
    request_id = str(uuid.uuid4())
    body = _body(request, await request.read())
    call = Call(body)
    # The document is read first only to match faults by operation; it is checked below.
    doc = None
    try:
        if isinstance(body.get("query"), str):
            doc = request.app[DOCUMENTS_KEY].load(body["query"], body.get("operationName") or None)
    except Refused:
        doc = None
    fault = state.faults.take(doc.is_mutation if doc else False, doc.root_fields if doc else ())
    if fault is not None:
        call.entry["fault"] = {"kind": fault.kind, "phase": fault.phase, "status": fault.status}
    if fault is not None and fault.phase == "before" and fault.kind in ("status", "drop"):
        call.done(state, f"fault:{fault.kind}", fault.status if fault.kind == "status" else 0)
        return await _fault_answer(request, fault)

    found = state.authenticate(request.headers.get("X-Shopify-Access-Token"))
    if found is None:
        call.done(state, "unauthorized", 401)
        return _json(UNAUTHORIZED_BODY, 401, request_id)
    shop, token = found
    call.entry.update(shop=shop.shop.domain, token=token.label)
    if token.forbidden:
        call.done(state, "forbidden", 403)
        return _json(forbidden_body(), 403, request_id)

    try:
        prepared = prepare(
            request.app[DOCUMENTS_KEY],
            body.get("query"),
            body.get("operationName"),
            body.get("variables"),
        )
    except Refused as exc:
        call.done(state, "invalid", 200, errors=exc.errors)
        return _json({"errors": exc.errors, "extensions": _cost(0, 0, shop)}, 200, request_id)

    admin = request.app[ADMIN_KEY]
    doc = prepared.doc
    cost = requested_cost(admin.schema, doc.operation, doc.fragments, prepared.variables)
    call.entry["requestedQueryCost"] = cost
    if cost > MAX_QUERY_COST:
        refusal = [max_cost_exceeded(cost, MAX_QUERY_COST)]
        call.done(state, "max_cost_exceeded", 200)
        return _json({"errors": refusal, "extensions": _cost(cost, None, shop)}, 200, request_id)
    if not shop.shop.bucket.try_take(cost):
        call.done(state, "throttled", 200, throttleStatus=shop.shop.bucket.status())
        return _json(
            {"errors": [throttled()], "extensions": _cost(cost, None, shop)}, 200, request_id
        )

    context = CallContext(shop.shop, token, admin, state.ids, request_id)
    if fault is not None and fault.kind == "slow":
        if doc.is_mutation:
            context.hold = fault.seconds
        else:
            await asyncio.sleep(fault.seconds)
    context.fail_inside = fault is not None and fault.kind == "internal_error"
    if context.fail_inside and not doc.is_mutation:
        shop.shop.bucket.give_back(cost)
        call.done(state, "internal_error", 200)
        return _json({"errors": [internal_error(request_id)]}, 200, request_id)

    result = await _execute(admin, prepared, context)
    if any(isinstance(e.original_error, InternalFailure) for e in result.errors or ()):
        shop.shop.bucket.give_back(cost)
        call.done(state, "internal_error", 200)
        return _json({"errors": [internal_error(request_id)]}, 200, request_id)
    actual = actual_cost(
        admin.schema, doc.operation, doc.fragments, prepared.variables, result.data
    )
    actual = min(actual, cost)
    shop.shop.bucket.give_back(cost - actual)
    answer: dict[str, Any] = {}
    errors: list[JsonError] = [from_graphql_error(e) for e in result.errors or ()]
    if errors:
        answer["errors"] = errors
    answer["data"] = result.data
    answer["extensions"] = _cost(cost, actual, shop)
    outcome = _outcome(result, errors)
    if fault is not None and fault.phase == "after" and fault.kind in ("status", "drop"):
        call.done(state, f"{outcome}+fault:{fault.kind}", fault.status, actualQueryCost=actual)
        return await _fault_answer(request, fault)
    call.done(state, outcome, 200, actualQueryCost=actual, response=answer)
    return _json(answer, 200, request_id)


async def _execute(admin: AdminSchema, prepared: Prepared, context: CallContext) -> ExecutionResult:
    outcome = execute(
        admin.schema,
        prepared.doc.document,
        context_value=context,
        variable_values=prepared.raw_variables,
        operation_name=prepared.doc.operation.name.value if prepared.doc.operation.name else None,
        field_resolver=resolve_field,
        middleware=[check_scopes],
    )
    if isinstance(outcome, ExecutionResult):
        return outcome
    return await outcome


def _outcome(result: ExecutionResult, errors: list[JsonError]) -> str:
    codes = sorted({str((e.get("extensions") or {}).get("code", "ERROR")) for e in errors})
    if codes:
        return "errors:" + ",".join(codes)
    user_codes: set[str] = set()
    for value in (result.data or {}).values():
        if isinstance(value, dict):
            for user_error in value.get("userErrors") or ():
                user_codes.add(str(user_error.get("code")))
    return "user_errors:" + ",".join(sorted(user_codes)) if user_codes else "ok"
