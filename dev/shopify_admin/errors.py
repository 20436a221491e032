"""Answers and GraphQL errors in the shapes Shopify gives them.

Sources (shopify.dev and real answers quoted in Shopify's community and in client
libraries' issues): 401 ``{"errors": "[API] Invalid API key or access token
(unrecognized login or wrong password)"}``; THROTTLED as an error
``{"message": "Throttled", "extensions": {"code": "THROTTLED", "documentation": ...}}``
with HTTP 200 and ``actualQueryCost: null``; MAX_COST_EXCEEDED with ``cost`` and
``maxCost``; ACCESS_DENIED with ``requiredAccess``; INTERNAL_SERVER_ERROR with a
``requestId``; the required ``@idempotent`` directive as BAD_REQUEST and a missing
``changeFromQuantity`` as INVALID_FIELD_ARGUMENTS (messages as Shopify words them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

from graphql import GraphQLError, Node

RATE_LIMITS_DOC: Final = "https://shopify.dev/api/usage/rate-limits"
ACCESS_SCOPES_DOC: Final = "https://shopify.dev/api/usage/access-scopes"

UNAUTHORIZED_BODY: Final = {
    "errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"
}
NOT_FOUND_BODY: Final = {"errors": "Not Found"}


def forbidden_body(scope: str = "write_inventory") -> dict[str, Any]:
    return {"errors": f"[API] This action requires merchant approval for {scope} scope."}


JsonError = dict[str, Any]


def error(
    message: str,
    *,
    locations: Sequence[dict[str, int]] | None = None,
    path: Sequence[str | int] | None = None,
    extensions: dict[str, Any] | None = None,
) -> JsonError:
    out: JsonError = {"message": message}
    if locations:
        out["locations"] = list(locations)
    if path is not None:
        out["path"] = list(path)
    if extensions:
        out["extensions"] = extensions
    return out


def locations_of(nodes: Iterable[Node]) -> list[dict[str, int]]:
    out = []
    for node in nodes:
        if node.loc is not None:
            location = node.loc.source.get_location(node.loc.start)
            out.append({"line": location.line, "column": location.column})
    return out


def from_graphql_error(exc: GraphQLError) -> JsonError:
    """A graphql-core error (raised in execution) as Shopify writes errors."""
    locations = [{"line": loc.line, "column": loc.column} for loc in exc.locations or ()]
    return error(
        exc.message,
        locations=locations,
        path=exc.path,
        extensions=dict(exc.extensions) if exc.extensions else None,
    )


def throttled() -> JsonError:
    return error("Throttled", extensions={"code": "THROTTLED", "documentation": RATE_LIMITS_DOC})


def max_cost_exceeded(cost: int, max_cost: int) -> JsonError:
    message = (
        f"Query cost is {cost}, which exceeds the single query max cost limit ({max_cost}).\n\n"
        "See https://shopify.dev/concepts/about-apis/rate-limits for more information on how the\n"
        "cost of a query is calculated.\n\n"
        "To query larger amounts of data with fewer limits, bulk operations should be used "
        "instead.\nSee https://shopify.dev/tutorials/perform-bulk-operations-with-admin-api "
        "for usage details.\n"
    )
    return error(
        message,
        extensions={
            "code": "MAX_COST_EXCEEDED",
            "cost": cost,
            "maxCost": max_cost,
            "documentation": RATE_LIMITS_DOC,
        },
    )


def access_denied(field: str, required_access: str) -> GraphQLError:
    """Raised in a resolver: graphql-core adds locations and path, nulls the field."""
    return GraphQLError(
        f"Access denied for {field} field. Required access: {required_access}",
        extensions={
            "code": "ACCESS_DENIED",
            "documentation": ACCESS_SCOPES_DOC,
            "requiredAccess": required_access,
        },
    )


def internal_error(request_id: str) -> JsonError:
    return error(
        "Internal error. Looks like something went wrong on our end.\n"
        f"Request ID: {request_id} (include this in support requests).",
        extensions={"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
    )


def not_modelled(what: str) -> GraphQLError:
    """The document is valid against Shopify's schema but asks for something this
    stand-in does not model: said loudly, never answered with made-up data."""
    return GraphQLError(
        f"{what} is not modelled by the Shopify stand-in",
        extensions={"code": "STANDIN_NOT_MODELLED"},
    )
