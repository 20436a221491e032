"""Access control of a live HTTP API process (``python -m services.http``): every
operation of its published OpenAPI document refuses a call without a credential
(401) and one without the operation's scope (403), the hot read path included, and
accepts API keys and JWTs that hold the scope."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from availability.ats import view
from infra.config import Settings
from infra.store import AvailabilityStore
from services.auth.api_keys import new_api_key
from services.auth.scopes import ALL_SCOPES, AVAILABILITY_READ, RULES_WRITE
from tests.integration.conftest import SettingsFactory, StartService
from tests.integration.http_api_support import SKU, availability_of, seed, stock_events
from tests.integration.support import (
    api_key_spec,
    drop_keys,
    free_port,
    mark_serving_layer_complete,
    wait_http_ready,
)
from tests.jwt_issuer import AUDIENCE, ISSUER, Issuer

SAMPLE_PARAMETERS = {"sku": SKU, "rule_id": "r1", "policy_id": "p1", "reservation_id": "res-1"}


@dataclass
class LiveApi:
    base: str
    keys: dict[str, str]  # scope -> a key holding only that scope
    scopeless: str
    issuer: Issuer
    store: AvailabilityStore

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.base, headers=headers, timeout=10)


@pytest.fixture
async def live(
    settings_factory: SettingsFactory, start_service: StartService, tmp_path: Path
) -> AsyncIterator[LiveApi]:
    keys = {scope: new_api_key() for scope in ALL_SCOPES}
    scopeless = new_api_key()
    issuer = Issuer(tmp_path)
    settings: Settings = settings_factory(
        auth_api_keys=[
            *(api_key_spec(key, (scope,), scope.replace(":", "-")) for scope, key in keys.items()),
            api_key_spec(scopeless, (), "nothing"),
        ],
        auth_jwt_jwks_file=str(issuer.jwks),
        auth_jwt_issuer=ISSUER,
        auth_jwt_audience=AUDIENCE,
        http_metrics_open=False,
    )
    store = AvailabilityStore.from_url(settings.redis_url, settings.redis_key_prefix)
    # A serving record, so that the hot read path would answer if it were asked first.
    await seed(store, availability_of(SKU, stock_events(SKU)))
    await mark_serving_layer_complete(store, settings.partitions)
    process = start_service("services.http", settings)
    await wait_http_ready(settings.http_port, timeout=60, path="/healthz", process=process)
    try:
        yield LiveApi(f"http://127.0.0.1:{settings.http_port}", keys, scopeless, issuer, store)
    finally:
        await drop_keys(store)
        await store.close()


async def test_every_published_operation_checks_credential_then_scope(live: LiveApi) -> None:
    async with live.client() as anonymous:
        document = (await anonymous.get("/openapi.json")).json()
    checked = []
    for template, item in document["paths"].items():
        path = re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PARAMETERS[m.group(1)], template)
        for method, operation in item.items():
            needed = {scope for req in operation["security"] for scope in req["bearer"]}
            async with live.client() as anonymous:
                refused = await anonymous.request(method.upper(), path)
            if not needed:
                assert refused.status_code not in (401, 403), (method, path)
                continue
            assert refused.status_code == 401, (method, path, refused.text)
            assert refused.json()["error"]["code"] == "unauthenticated"
            async with live.client(live.scopeless) as scopeless:
                denied = await scopeless.request(method.upper(), path)
            assert denied.status_code == 403, (method, path, denied.text)
            assert denied.json()["error"]["code"] == "permission_denied"
            for scope in needed:
                async with live.client(live.keys[scope]) as allowed:
                    passed = await allowed.request(method.upper(), path)
                assert passed.status_code not in (401, 403), (method, path, scope)
            checked.append((method, template))
    assert len(checked) >= 7, checked


async def test_the_hot_read_answers_only_after_the_check(live: LiveApi) -> None:
    expected = orjson.dumps(view(availability_of(SKU, stock_events(SKU)), "online"))
    async with live.client() as anonymous:
        assert (await anonymous.get(f"/v1/availability/{SKU}")).status_code == 401
    async with live.client("avk_" + "x" * 43) as forged:
        assert (await forged.get(f"/v1/availability/{SKU}")).status_code == 401
    async with live.client(live.keys[RULES_WRITE]) as planner:
        assert (await planner.get(f"/v1/availability/{SKU}")).status_code == 403
    async with live.client(live.keys[AVAILABILITY_READ]) as storefront:
        answer = await storefront.get(f"/v1/availability/{SKU}")
        assert answer.status_code == 200
        assert answer.content == expected
    async with live.client(live.keys["metrics:read"]) as scraper:
        metrics = (await scraper.get("/metrics")).text
    assert re.search(r'availability_http_auth_refusals_total\{status="401"\} [2-9]', metrics)
    assert re.search(r'availability_http_auth_refusals_total\{status="403"\} [1-9]', metrics)


async def test_jwt_bearer_tokens(live: LiveApi) -> None:
    reader = live.issuer.token(scope="availability:read")
    async with live.client(reader) as client:
        assert (await client.get(f"/v1/availability/{SKU}")).status_code == 200
        assert (await client.get("/v1/rules")).status_code == 403
    expired = live.issuer.token(scope="availability:read", exp=int(time.time()) - 120)
    async with live.client(expired) as client:
        refused = await client.get(f"/v1/availability/{SKU}")
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "the token has expired"
    other_audience = live.issuer.token(scope="availability:read", aud="another-api")
    async with live.client(other_audience) as client:
        assert (await client.get(f"/v1/availability/{SKU}")).status_code == 401


async def test_readyz_names_what_failed_but_not_the_error(
    settings_factory: SettingsFactory, start_service: StartService
) -> None:
    dead_port = free_port()
    settings = settings_factory().model_copy(
        update={
            "redis_url": f"redis://127.0.0.1:{dead_port}/0",
            "broker": f"kafka://127.0.0.1:{free_port()}",
        }
    )
    process = start_service("services.http", settings)
    await wait_http_ready(settings.http_port, timeout=60, path="/healthz", process=process)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}") as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["redis"] == "Redis unreachable"
    assert checks["broker"] == "rules log not connected to the broker"
    assert str(dead_port) not in ready.text
    assert "Error" not in ready.text and "refused" not in ready.text.lower()
