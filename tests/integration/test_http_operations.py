"""The HTTP API's operational routes against real Redis and the development broker:
`/healthz`, `/readyz` (the stream processor, this replica), `/metrics`, the OpenAPI
document, Redis and the broker away (503, never 500), and `python -m services.http`."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson

from availability.ats import view
from infra.config import Settings
from infra.store import AvailabilityStore
from tests.integration.conftest import StartService
from tests.integration.http_api_support import (
    SKU,
    Api,
    api,
    availability_of,
    error_of,
    seed,
    stock_events,
)
from tests.integration.http_support import serve_app
from tests.integration.support import (
    auth_headers,
    drop_keys,
    free_port,
    mark_serving_layer_complete,
    wait_until,
)

__all__ = ["api"]  # the fixture


# --------------------------------------------------------------------------- operations


async def test_healthz(api: Api) -> None:
    response = await api.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def caught_up_status(lag: int = 0, recovered: bool = True) -> dict[str, Any]:
    return {
        "worker_id": "w-1",
        "recovered": recovered,
        "lag": lag,
        "lag_by_partition": {"x.pos.transactions:0": lag},
    }


async def test_readyz_follows_the_stream_processor(api: Api) -> None:
    response = await api.client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["redis"] == "ok"
    assert body["checks"]["broker"] == "ok"
    assert body["checks"]["processor"] != "ok"
    assert body["error"]["code"] == "unavailable"
    assert "processor" in body["error"]["message"]

    await api.store.report_worker("w-1", caught_up_status(recovered=False))
    recovering = await api.client.get("/readyz")
    assert recovering.status_code == 503
    assert "recovering" in recovering.json()["checks"]["processor"]

    await api.store.report_worker("w-1", caught_up_status(lag=api.settings.ready_max_lag + 1))
    behind = await api.client.get("/readyz")
    assert behind.status_code == 503
    assert "behind" in behind.json()["checks"]["processor"]

    await api.store.report_worker("w-1", caught_up_status(lag=api.settings.ready_max_lag))
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"redis": "ok", "broker": "ok", "processor": "ok", "serving": "ok"},
    }

    await api.store.report_worker("w-1", {**caught_up_status(), "rebuilding": [0, 2]})
    rebuilding = await api.client.get("/readyz")
    assert rebuilding.status_code == 503
    assert (
        "rewriting the serving records of partitions [0, 2]"
        in (rebuilding.json()["checks"]["processor"])
    )


async def test_readyz_local_is_this_replica_alone(api: Api) -> None:
    # No worker has reported: the cluster is not ready, but this replica can answer reads
    # (its Kubernetes readiness probe; README "Helm chart").
    assert (await api.client.get("/readyz")).status_code == 503
    async with httpx.AsyncClient(base_url=api.client.base_url) as kubelet:  # no credential
        local = await kubelet.get("/readyz/local")
    assert local.status_code == 200
    assert local.json() == {"status": "ready", "checks": {"redis": "ok"}}

    # Redis lost the serving layer: the whole service is not ready, but that is the
    # same for every replica, and this one still answers (the records already
    # rewritten, a clear 503 for the rest), so it stays in its Service.
    await api.store.forget_built()
    assert (await api.client.get("/readyz")).status_code == 503
    still = await api.client.get("/readyz/local")
    assert still.status_code == 200
    assert still.json() == {"status": "ready", "checks": {"redis": "ok"}}
    # ... and what it answers for a record not rewritten yet is a clear 503, not a 404.
    unwritten = await api.client.get("/v1/availability/NOT-REWRITTEN-YET")
    assert unwritten.status_code == 503
    assert unwritten.json()["error"]["code"] == "unavailable"


async def test_metrics(api: Api) -> None:
    await seed(api.store, availability_of(SKU, stock_events(SKU)))
    await api.store.add_counts({"folded:pos.sale": 3, "dead_letters:pos.transactions": 1})
    await api.store.report_worker("w-1", caught_up_status(lag=7))
    assert (await api.client.get(f"/v1/availability/{SKU}")).status_code == 200
    assert (await api.client.get("/v1/availability/NEVER")).status_code == 404
    assert (await api.client.get("/no/such/route")).status_code == 404

    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        'availability_http_requests_total{method="GET",route="/v1/availability/{sku}",'
        'status="200"} 1.0' in text
    )
    assert (
        'availability_http_requests_total{method="GET",route="/v1/availability/{sku}",'
        'status="404"} 1.0' in text
    )
    assert 'route="unmatched",status="404"' in text
    assert SKU not in text  # labels carry the route template, not the path
    assert "availability_http_request_duration_seconds_bucket{" in text
    assert 'availability_events_folded_total{type="pos.sale"} 3.0' in text
    assert 'availability_dead_letters_total{topic="pos.transactions"} 1.0' in text
    assert 'availability_consumer_lag{partition="x.pos.transactions:0",worker="w-1"} 7.0' in text


async def test_openapi_documents_every_route(api: Api) -> None:
    response = await api.client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert set(paths) >= {
        "/v1/availability/{sku}",
        "/v1/availability:batch",
        "/v1/rules",
        "/v1/rules/{rule_id}",
        "/healthz",
        "/readyz",
        "/readyz/local",
        "/metrics",
    }
    assert (await api.client.get("/docs")).status_code == 200


# --------------------------------------------------------------------------- failures


async def test_redis_and_broker_down_give_503_not_500(settings: Settings) -> None:
    down = settings.model_copy(
        update={
            "redis_url": f"redis://127.0.0.1:{free_port()}/0",
            "broker": f"kafka://127.0.0.1:{free_port()}",
            "http_port": free_port(),
        }
    )
    started = time.monotonic()
    server, task = await serve_app(down)
    assert time.monotonic() - started < 10  # start-up does not wait for the broker
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{down.http_port}", timeout=30, headers=auth_headers()
        ) as client:
            assert (await client.get("/healthz")).status_code == 200

            ready = await client.get("/readyz")
            assert ready.status_code == 503
            checks = ready.json()["checks"]
            assert all(checks[name] != "ok" for name in ("redis", "broker", "processor"))
            local = await client.get("/readyz/local")
            assert local.status_code == 503
            assert local.json()["checks"]["redis"] == "Redis unreachable"

            read = await client.get(f"/v1/availability/{SKU}")
            assert read.status_code == 503
            assert error_of(read)["code"] == "unavailable"

            for method, path, body in (
                ("GET", "/v1/rules", None),
                ("GET", "/v1/rules/r1", None),
                ("PUT", "/v1/rules/r1", {"safety_stock": 1}),
                ("DELETE", "/v1/rules/r1", None),
            ):
                response = await client.request(method, path, json=body)
                assert response.status_code == 503, (method, path)
                assert error_of(response)["code"] == "unavailable"

            # Bad input is still a 400, whatever is down.
            invalid = await client.put("/v1/rules/r1", json={"safety_stock": -1})
            assert invalid.status_code == 400

            assert (await client.get("/metrics")).status_code == 200
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def test_python_m_services_http(settings: Settings, start_service: StartService) -> None:
    store = AvailabilityStore.from_url(settings.redis_url, settings.redis_key_prefix)
    try:
        await store.report_worker("w-1", caught_up_status())
        record = availability_of(SKU, stock_events(SKU))
        await seed(store, record)
        await mark_serving_layer_complete(store, settings.partitions)
        process = start_service("services.http", settings)
        base = f"http://127.0.0.1:{settings.http_port}"
        async with httpx.AsyncClient(base_url=base, timeout=10, headers=auth_headers()) as client:

            async def ready() -> bool:
                assert process.running, process.tail()
                await store.report_worker("w-1", caught_up_status())
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(ready, timeout=30, interval=0.2)
            response = await client.get(f"/v1/availability/{SKU}")
            assert response.status_code == 200
            assert response.content == orjson.dumps(view(record, "online"))
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            # The Helm chart's readiness probe, on the real process.
            local = await client.get("/readyz/local")
            assert (local.status_code, local.json()["status"]) == (200, "ready")
    finally:
        await drop_keys(store)
        await store.close()
