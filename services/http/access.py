"""Access control of the HTTP API: every route says what it needs, and one ASGI
middleware, outermost, enforces it before anything else answers.

A route declares its needs in its OpenAPI operation, so the published document says
the same as the check: ``**requires(scope, ...)`` (a bearer credential holding any
of the scopes) or ``**OPEN`` (no credential). ``AccessTable.from_app`` reads the
declarations once the routes are in place and refuses to build (the app does not
start) when an API route declares nothing: a new endpoint is protected from its
first commit.

``Authentication`` is placed outside the hot-read middleware
(``services.http.hot_reads``), so no route, however fast its path, answers before
the check. A path that matches no route still needs a valid credential (a 401
tells a stranger nothing about which paths exist); a valid one then gets the
router's 404 or 405.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from services.auth.authenticator import Authenticator
from services.auth.identity import Unauthenticated, missing_scope_message
from services.http.responses import error_response

log = logging.getLogger(__name__)

BEARER_SCHEME: Final = "bearer"
UNAUTHENTICATED: Final = "unauthenticated"
PERMISSION_DENIED: Final = "permission_denied"
#: What ``scope["state"]["identity"]`` holds for the routes (``deps.IdentityDep``).
IDENTITY_KEY: Final = "identity"
_CHALLENGE = 'Bearer realm="availability"'


def requires(*any_of: str) -> dict[str, Any]:
    """OpenAPI ``security`` of a route that needs a credential with one of ``any_of``."""
    if not any_of:
        raise ValueError("requires() needs at least one scope; use OPEN for none")
    return {"security": [{BEARER_SCHEME: [scope]} for scope in any_of]}


#: OpenAPI ``security`` of a route that needs no credential.
OPEN: Final[dict[str, Any]] = {"security": []}


class UndeclaredAccess(RuntimeError):
    """An API route that says neither ``requires(...)`` nor ``OPEN``."""


@dataclass(frozen=True, slots=True)
class RouteAccess:
    methods: frozenset[str]
    path: re.Pattern[str]
    any_of: frozenset[str] | None  # None: open


class AccessTable:
    """What each (method, path) needs: None (open) or the scopes, any of which does;
    an empty set for a path no route has (any valid credential, then 404/405)."""

    def __init__(self, routes: Sequence[RouteAccess]) -> None:
        self.routes = tuple(routes)

    @classmethod
    def from_app(
        cls, app: FastAPI, *, open_paths: Iterable[str] = (), overrides: Mapping[str, Any] = {}
    ) -> AccessTable:
        """``open_paths``: non-API routes served without a credential (the docs).
        ``overrides``: path -> ``OPEN`` or ``requires(...)``, replacing a declaration."""
        open_set = set(open_paths)
        found: list[RouteAccess] = []
        # The routes as the router sees them (included routers expanded).
        for route in iter_route_contexts(app.routes):
            methods = frozenset(route.methods or ())
            if isinstance(route.original_route, APIRoute):
                declared = overrides.get(route.path or "") or route.openapi_extra or {}
                if "security" not in declared:
                    raise UndeclaredAccess(
                        f"route {sorted(methods)} {route.path} declares no access:"
                        " add **requires(<scope>) or **OPEN to its openapi_extra"
                    )
                found.append(RouteAccess(methods, route.path_regex, _any_of(declared["security"])))
            elif route.path in open_set:
                found.append(RouteAccess(methods, route.path_regex, None))
        return cls(found)

    def needs(self, method: str, path: str) -> frozenset[str] | None:
        for route in self.routes:
            if method in route.methods and route.path.match(path):
                return route.any_of
        # A known path with another method (405) or an unknown path (404): any
        # valid credential first.
        return frozenset()


def _any_of(security: Sequence[Mapping[str, Sequence[str]]]) -> frozenset[str] | None:
    if not security:
        return None
    scopes: set[str] = set()
    for requirement in security:
        scopes.update(requirement.get(BEARER_SCHEME, ()))
    return frozenset(scopes)


class Authentication:
    """Pure ASGI middleware: a bearer credential and its scopes, or 401/403."""

    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        table: AccessTable,
        refusals: Counter,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.table = table
        self._unauthenticated = refusals.labels("401")
        self._denied = refusals.labels("403")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        any_of = self.table.needs(scope["method"], scope["path"])
        if any_of is None:
            await self.app(scope, receive, send)
            return
        try:
            identity = self.authenticator.authenticate(_authorization(scope["headers"]))
        except Unauthenticated as exc:
            self._unauthenticated.inc()
            log.debug("401 %s %s: %s", scope["method"], scope["path"], exc.reason)
            response = error_response(
                401,
                UNAUTHENTICATED,
                exc.reason,
                {"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token"'},
            )
            await response(scope, receive, send)
            return
        if not identity.allows(any_of):
            self._denied.inc()
            needed = " ".join(sorted(any_of))
            response = error_response(
                403,
                PERMISSION_DENIED,
                missing_scope_message(identity, any_of),
                {"WWW-Authenticate": f'{_CHALLENGE}, error="insufficient_scope", scope="{needed}"'},
            )
            await response(scope, receive, send)
            return
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state[IDENTITY_KEY] = identity
        await self.app(scope, receive, send)


def _authorization(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            return value.decode("latin-1")
    return None
