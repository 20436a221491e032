"""Access control of the HTTP API (services.http.access), on the app without its
lifespan: every route answers 401 without a credential and 403 without its scope,
before anything else (the integration tests do the same against a live server)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from infra.config import ApiKeySpec, Settings
from services.auth.api_keys import hash_api_key, new_api_key
from services.auth.scopes import ALL_SCOPES, METRICS_READ
from services.http import create_app
from services.http.access import OPEN, AccessTable, UndeclaredAccess, requires

SAMPLE_PARAMETERS = {"sku": "SKU-1", "rule_id": "r1", "policy_id": "p1", "reservation_id": "r1"}


class Keys:
    """One key per scope, one with every scope, one with none."""

    def __init__(self) -> None:
        self.by_scope = {scope: new_api_key() for scope in ALL_SCOPES}
        self.none = new_api_key()
        self.specs = [
            ApiKeySpec(id=scope.replace(":", "-"), sha256=hash_api_key(key), scopes=(scope,))
            for scope, key in self.by_scope.items()
        ] + [ApiKeySpec(id="nothing", sha256=hash_api_key(self.none), scopes=())]


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def operations(app: FastAPI) -> Iterator[tuple[str, str, frozenset[str] | None]]:
    """(method, concrete path, scopes any of which it needs; None: open) of every route."""
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute):
            continue
        security = (route.openapi_extra or {})["security"]
        needed = frozenset(s for req in security for s in req["bearer"]) if security else None
        path = re.sub(
            r"\{(\w+)(?::\w+)?\}", lambda m: SAMPLE_PARAMETERS[m.group(1)], route.path_format
        )
        for method in sorted(route.methods or ()):
            yield method, path, needed


def client(app: FastAPI, key: str | None = None) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers)


async def test_every_route_refuses_without_credential_and_without_scope(keys: Keys) -> None:
    app = create_app(Settings(auth_api_keys=keys.specs, http_metrics_open=False))
    checked = 0
    for method, path, needed in operations(app):
        async with client(app) as anonymous:
            answer = await anonymous.request(method, path)
        if needed is None:
            assert answer.status_code not in (401, 403), (method, path)
            continue
        assert answer.status_code == 401, (method, path, answer.text)
        assert answer.json()["error"]["code"] == "unauthenticated"
        assert answer.headers["www-authenticate"].startswith('Bearer realm="availability"')
        async with client(app, keys.none) as scopeless:
            denied = await scopeless.request(method, path)
        assert denied.status_code == 403, (method, path)
        assert denied.json()["error"]["code"] == "permission_denied"
        assert "insufficient_scope" in denied.headers["www-authenticate"]
        for scope in needed:
            async with client(app, keys.by_scope[scope]) as allowed:
                passed = await allowed.request(method, path)
            # Past the check: the route runs (and, without the lifespan, fails inside).
            assert passed.status_code not in (401, 403), (method, path, scope)
        for scope in set(ALL_SCOPES) - needed:
            async with client(app, keys.by_scope[scope]) as other:
                assert (await other.request(method, path)).status_code == 403, (path, scope)
        checked += 1
    assert checked >= 7


async def test_probes_are_open_and_metrics_open_by_default(keys: Keys) -> None:
    app = create_app(Settings(auth_api_keys=keys.specs))
    async with client(app) as anonymous:
        assert (await anonymous.get("/healthz")).status_code == 200
        assert (await anonymous.get("/metrics")).status_code not in (401, 403)
        assert (await anonymous.get("/openapi.json")).status_code == 200
    closed = create_app(Settings(auth_api_keys=keys.specs, http_metrics_open=False))
    async with client(closed) as anonymous:
        assert (await anonymous.get("/metrics")).status_code == 401
    async with client(closed, keys.by_scope[METRICS_READ]) as scraper:
        assert (await scraper.get("/metrics")).status_code not in (401, 403)


async def test_unknown_paths_need_a_credential_first(keys: Keys) -> None:
    app = create_app(Settings(auth_api_keys=keys.specs, http_docs=False))
    async with client(app) as anonymous:
        assert (await anonymous.get("/nope")).status_code == 401
        assert (await anonymous.get("/docs")).status_code == 401
        assert (await anonymous.put("/healthz")).status_code == 401
    async with client(app, keys.none) as known:
        assert (await known.get("/nope")).status_code == 404
        assert (await known.get("/openapi.json")).status_code == 404
        assert (await known.put("/healthz")).status_code == 405


def test_the_openapi_document_names_the_scheme_and_every_operations_security() -> None:
    spec = create_app(Settings()).openapi()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            assert "security" in operation, (method, path)
    batch = spec["paths"]["/v1/availability:batch"]["post"]
    assert batch["security"] == [{"bearer": ["availability:read"]}]
    assert spec["paths"]["/healthz"]["get"]["security"] == []


def test_a_route_that_declares_nothing_stops_the_app_from_being_built() -> None:
    app = FastAPI()

    @app.get("/declared", openapi_extra=requires(METRICS_READ))
    async def declared() -> None: ...

    @app.get("/open", openapi_extra=OPEN)
    async def open_route() -> None: ...

    table = AccessTable.from_app(app)
    assert table.needs("GET", "/declared") == {METRICS_READ}
    assert table.needs("GET", "/open") is None
    assert table.needs("GET", "/elsewhere") == frozenset()

    @app.get("/forgotten")
    async def forgotten() -> None: ...

    with pytest.raises(UndeclaredAccess, match="/forgotten"):
        AccessTable.from_app(app)
