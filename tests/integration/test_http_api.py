"""The HTTP API (contract section 6) against real Redis and the development broker.

Each test serves ``create_app(settings)`` with uvicorn on a free loopback port in the
test's event loop, and seeds serving records the way the stream processor writes
them: domain events folded with ``availability.state``, ``build_availability`` with
a ``RuleBook``, ``AvailabilityStore.write_records``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from availability.ats import SkuAvailability, build_availability, view
from availability.events import event_from_dict
from availability.identifiers import parse_timestamp
from availability.rules import Rule, RuleBook, parse_rule
from availability.state import fold_all
from infra.config import Settings
from infra.store import AvailabilityStore
from tests.integration.conftest import StartService
from tests.integration.http_support import serve_app
from tests.integration.scenario import seed_events
from tests.integration.support import (
    auth_headers,
    drop_keys,
    free_port,
    mark_serving_layer_complete,
    wait_until,
)

NOW = parse_timestamp("2026-11-22T12:00:00Z")
SKU = "AB/12-x.y:z"  # '/' and ':' are valid in a SKU
OTHER_SKU = "SKU-2"


@dataclass
class Api:
    client: httpx.AsyncClient
    store: AvailabilityStore
    settings: Settings


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    server, task = await serve_app(settings)
    store = AvailabilityStore.from_url(settings.redis_url, settings.redis_key_prefix)
    await mark_serving_layer_complete(store, settings.partitions)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{settings.http_port}", timeout=20, headers=auth_headers()
        ) as client:
            yield Api(client, store, settings)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)
        await drop_keys(store)
        await store.close()


# --------------------------------------------------------------------------- seeding


def stock_events(sku: str) -> list[dict[str, Any]]:
    """Three locations: S1 (sale, damaged return, a reservation), W1 (ships to S2), S2."""
    return seed_events()


def rule(rule_id: str, **fields: Any) -> Rule:
    return parse_rule(rule_id, fields)


SEED_RULES = (
    rule("global", safety_stock=1, channel_buffers={"marketplace": 2}),
    rule("s2-specific", sku=SKU, location_id="S2", channel_buffers={"marketplace": 3}),
)


def availability_of(
    sku: str, events: Iterable[Mapping[str, Any]], rules: Sequence[Rule] = SEED_RULES
) -> SkuAvailability:
    state = fold_all(sku, [event_from_dict({**event, "sku": sku}) for event in events])
    return build_availability(state, RuleBook(rules), NOW)


async def seed(store: AvailabilityStore, *records: SkuAvailability) -> None:
    await store.write_records(list(records))


def error_of(response: httpx.Response) -> dict[str, str]:
    """The error object; fails unless the body is exactly the contract's error shape."""
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in response.text
    return dict(body["error"])


# --------------------------------------------------------------------------- reads


async def test_known_sku_answer_is_the_view_byte_for_byte(api: Api) -> None:
    record = availability_of(SKU, stock_events(SKU))
    await seed(api.store, record)

    response = await api.client.get(f"/v1/availability/{SKU}")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    expected = view(record, "online")
    assert response.content == orjson.dumps(expected)  # same fields, same order
    body = response.json()
    assert list(body) == ["sku", "channel", "ats", "locations"]
    assert [loc["location_id"] for loc in body["locations"]] == ["S1", "S2", "W1"]
    s1 = body["locations"][0]
    assert list(s1) == [
        "location_id", "on_hand", "reserved", "in_transit", "damaged", "safety_stock", "buffer",
        "ats",
    ]  # fmt: skip
    assert s1 == {
        "location_id": "S1", "on_hand": 17, "reserved": 2, "in_transit": 0, "damaged": 1,
        "safety_stock": 1, "buffer": 0, "ats": 14,
    }  # fmt: skip
    assert body["ats"] == sum(loc["ats"] for loc in body["locations"])


@pytest.mark.parametrize("channel", ["online", "marketplace"])
async def test_hot_path_and_the_route_answer_alike(api: Api, channel: str) -> None:
    # services.http.hot_reads answers a plain ?channel= itself; a percent-escaped
    # channel name (the same name) goes on to the FastAPI route.
    record = availability_of(SKU, stock_events(SKU))
    await seed(api.store, record)
    escaped = "%" + channel[0].encode().hex() + channel[1:]

    hot = await api.client.get(f"/v1/availability/{SKU}", params={"channel": channel})
    routed = await api.client.get(f"/v1/availability/{SKU}?channel={escaped}")
    metrics = (await api.client.get("/metrics")).text

    assert hot.status_code == routed.status_code == 200
    assert hot.content == routed.content == orjson.dumps(view(record, channel))
    assert hot.headers.items() - {("date", hot.headers["date"])} == routed.headers.items() - {
        ("date", routed.headers["date"])
    }
    assert (
        'availability_http_requests_total{method="GET",route="/v1/availability/{sku}",'
        'status="200"} 2.0'
    ) in metrics


async def test_channel_with_a_buffer_differs_from_the_default_channel(api: Api) -> None:
    record = availability_of(SKU, stock_events(SKU))
    await seed(api.store, record)

    online = (await api.client.get(f"/v1/availability/{SKU}")).json()
    explicit = await api.client.get(f"/v1/availability/{SKU}", params={"channel": "online"})
    market = await api.client.get(f"/v1/availability/{SKU}", params={"channel": "marketplace"})
    unnamed = await api.client.get(f"/v1/availability/{SKU}", params={"channel": "store"})

    assert explicit.json() == online
    assert market.status_code == 200
    assert market.content == orjson.dumps(view(record, "marketplace"))
    buffers = {loc["location_id"]: loc["buffer"] for loc in market.json()["locations"]}
    assert buffers == {"S1": 2, "S2": 3, "W1": 2}  # the specific rule wins at S2
    assert market.json()["ats"] == online["ats"] - 7
    # A channel that no rule names has buffer 0: same figures as online.
    assert unnamed.content == orjson.dumps(view(record, "store"))
    assert unnamed.json()["ats"] == online["ats"]


async def test_location_filter(api: Api) -> None:
    record = availability_of(SKU, stock_events(SKU))
    await seed(api.store, record)

    s2 = await api.client.get(
        f"/v1/availability/{SKU}", params={"location_id": "S2", "channel": "marketplace"}
    )
    assert s2.status_code == 200
    assert s2.content == orjson.dumps(view(record, "marketplace", "S2"))
    assert [loc["location_id"] for loc in s2.json()["locations"]] == ["S2"]
    assert s2.json()["ats"] == s2.json()["locations"][0]["ats"]

    absent = await api.client.get(f"/v1/availability/{SKU}", params={"location_id": "NOWHERE"})
    assert absent.status_code == 200
    assert absent.json() == {"sku": SKU, "channel": "online", "ats": 0, "locations": []}


async def test_unknown_sku_is_404_with_an_error_body(api: Api) -> None:
    for params in ({}, {"location_id": "S1"}):
        response = await api.client.get("/v1/availability/NEVER-SEEN", params=params)
        assert response.status_code == 404
        error = error_of(response)
        assert error["code"] == "not_found"
        assert "NEVER-SEEN" in error["message"]


async def test_reads_while_the_serving_layer_is_rebuilt(api: Api) -> None:
    """A SKU without a record is not called unknown while records may be missing;
    the records that are there are served."""
    record = availability_of(SKU, stock_events(SKU))
    await seed(api.store, record)
    await api.store.forget_built()  # as after a flush of Redis, or `services.cli rebuild`
    epoch = await api.store.begin_rebuild(api.settings.partitions)
    assert await api.store.mark_built(epoch, [0])
    await asyncio.sleep(1.1)  # past the time a read trusts an earlier "complete"

    known = await api.client.get(f"/v1/availability/{SKU}")
    assert known.status_code == 200
    assert known.json() == view(record, "online")
    for params in ({}, {"location_id": "S1"}):
        response = await api.client.get("/v1/availability/NEVER-SEEN", params=params)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        error = error_of(response)
        assert error["code"] == "unavailable"
        assert f"1 of {api.settings.partitions} partitions" in error["message"]
    batch = await api.client.post("/v1/availability:batch", json={"skus": [SKU, "NEVER-SEEN"]})
    assert batch.status_code == 503
    assert "rebuilt" in error_of(batch)["message"]
    whole = await api.client.post("/v1/availability:batch", json={"skus": [SKU]})
    assert whole.status_code == 200
    ready = (await api.client.get("/readyz")).json()
    assert ready["checks"]["serving"] == (
        f"serving layer being rebuilt: 1 of {api.settings.partitions} partitions written"
    )

    # A mark of an epoch that Redis has lost since counts for nothing.
    await api.store.forget_built()
    assert not await api.store.mark_built(epoch, range(api.settings.partitions))
    assert not (await api.store.serving_layer()).complete

    await mark_serving_layer_complete(api.store, api.settings.partitions)
    assert (await api.client.get("/v1/availability/NEVER-SEEN")).status_code == 404
    assert (await api.client.get("/readyz")).json()["checks"]["serving"] == "ok"


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/availability/bad%20sku", {}, "sku"),
        ("/v1/availability/" + "x" * 129, {}, "sku"),
        ("/v1/availability/", {}, "sku"),
        ("/v1/availability/OK-1", {"channel": "Online"}, "channel"),
        ("/v1/availability/OK-1", {"channel": ""}, "channel"),
        ("/v1/availability/OK-1", {"channel": "x" * 33}, "channel"),
        ("/v1/availability/OK-1", {"location_id": "bad loc"}, "location_id"),
        ("/v1/availability/OK-1", {"location_id": ""}, "location_id"),
    ],
)
async def test_invalid_identifiers_are_400(
    api: Api, path: str, params: dict[str, str], field: str
) -> None:
    response = await api.client.get(path, params=params)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_argument"
    assert error["message"].startswith(field)


# --------------------------------------------------------------------------- batch


async def test_batch_answers_in_request_order_with_unknown_and_duplicates(api: Api) -> None:
    first = availability_of(SKU, stock_events(SKU))
    second = availability_of(OTHER_SKU, stock_events(OTHER_SKU))
    await seed(api.store, first, second)
    skus = [OTHER_SKU, "UNKNOWN-1", SKU, OTHER_SKU, "UNKNOWN-1"]

    response = await api.client.post(
        "/v1/availability:batch", json={"skus": skus, "channel": "marketplace"}
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    unknown = {"sku": "UNKNOWN-1", "ats": 0, "locations": []}
    assert response.json() == {
        "channel": "marketplace",
        "items": [
            view(second, "marketplace"),
            unknown,
            view(first, "marketplace"),
            view(second, "marketplace"),
            unknown,
        ],
    }


async def test_batch_defaults_to_online_and_accepts_an_empty_list(api: Api) -> None:
    record = availability_of(SKU, stock_events(SKU))
    await seed(api.store, record)

    response = await api.client.post("/v1/availability:batch", json={"skus": [SKU]})
    assert response.status_code == 200
    assert response.json() == {"channel": "online", "items": [view(record, "online")]}

    empty = await api.client.post("/v1/availability:batch", json={"skus": []})
    assert empty.status_code == 200
    assert empty.json() == {"channel": "online", "items": []}


async def test_batch_of_500_is_served_and_501_refused(api: Api) -> None:
    ok = await api.client.post(
        "/v1/availability:batch", json={"skus": [f"S-{i}" for i in range(500)]}
    )
    assert ok.status_code == 200
    assert len(ok.json()["items"]) == 500

    too_many = await api.client.post(
        "/v1/availability:batch", json={"skus": [f"S-{i}" for i in range(501)]}
    )
    assert too_many.status_code == 400
    error = error_of(too_many)
    assert error["code"] == "invalid_argument"
    assert "500" in error["message"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"skus": ["OK", "bad sku"]}, "skus[1]"),
        ({"skus": ["OK", 7]}, "skus[1]"),
        ({"skus": "OK"}, "skus"),
        ({}, "skus"),
        ({"skus": ["OK"], "channel": "Bad"}, "channel"),
        ({"skus": ["OK"], "extra": 1}, "extra"),
        (["OK"], "object"),
    ],
)
async def test_invalid_batch_bodies_are_400(api: Api, body: Any, needle: str) -> None:
    response = await api.client.post("/v1/availability:batch", json=body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_argument"
    assert needle in error["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/availability:batch"), ("PUT", "/v1/rules/r1")],
)
@pytest.mark.parametrize("content", [b"{not json", b"", b'{"skus": [}', b"\xff\xfe"])
async def test_malformed_json_is_400(api: Api, method: str, path: str, content: bytes) -> None:
    response = await api.client.request(
        method, path, content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "malformed_json"


async def test_oversized_body_is_413(api: Api) -> None:
    response = await api.client.post("/v1/availability:batch", content=b" " * (1024 * 1024 + 1))
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"


async def test_unknown_route_and_wrong_method_have_error_bodies(api: Api) -> None:
    missing = await api.client.get("/v2/nothing")
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "not_found"

    wrong = await api.client.delete(f"/v1/availability/{SKU}")
    assert wrong.status_code == 405
    assert error_of(wrong)["code"] == "method_not_allowed"
    assert wrong.headers["allow"] == "GET"

    batch_get = await api.client.get("/v1/availability:batch")
    assert batch_get.status_code in (404, 405)  # never a 500
    error_of(batch_get)


# --------------------------------------------------------------------------- rules


async def test_rules_crud(api: Api) -> None:
    client = api.client
    put_b = await client.put(
        "/v1/rules/b-rule",
        json={"sku": SKU, "safety_stock": 2, "channel_buffers": {"online": 1, "marketplace": 4}},
    )
    assert put_b.status_code == 200
    stored_b = {
        "rule_id": "b-rule",
        "sku": SKU,
        "location_id": None,
        "safety_stock": 2,
        "channel_buffers": {"marketplace": 4, "online": 1},
    }
    assert put_b.json() == stored_b

    put_a = await client.put(
        "/v1/rules/a-rule", json={"rule_id": "a-rule", "location_id": "S1", "safety_stock": 0}
    )
    assert put_a.status_code == 200
    stored_a = {
        "rule_id": "a-rule",
        "sku": None,
        "location_id": "S1",
        "safety_stock": 0,
        "channel_buffers": None,
    }
    assert put_a.json() == stored_a

    got = await client.get("/v1/rules/b-rule")
    assert got.status_code == 200
    assert got.json() == stored_b

    listed = await client.get("/v1/rules")
    assert listed.status_code == 200
    assert listed.json() == {"rules": [stored_a, stored_b]}

    replaced = await client.put("/v1/rules/b-rule", json={"sku": SKU, "safety_stock": 5})
    assert replaced.status_code == 200
    assert (await client.get("/v1/rules/b-rule")).json()["safety_stock"] == 5

    deleted = await client.delete("/v1/rules/b-rule")
    assert deleted.status_code == 204
    assert deleted.content == b""
    again = await client.delete("/v1/rules/b-rule")
    assert again.status_code == 404
    assert error_of(again)["code"] == "not_found"

    gone = await client.get("/v1/rules/b-rule")
    assert gone.status_code == 404
    assert error_of(gone)["code"] == "not_found"
    assert (await client.get("/v1/rules")).json() == {"rules": [stored_a]}


async def test_rule_for_a_held_scope_is_409(api: Api) -> None:
    first = await api.client.put("/v1/rules/first", json={"sku": SKU, "location_id": "S1"})
    assert first.status_code == 200

    clash = await api.client.put(
        "/v1/rules/second", json={"sku": SKU, "location_id": "S1", "safety_stock": 3}
    )
    assert clash.status_code == 409
    error = error_of(clash)
    assert error["code"] == "scope_conflict"
    assert "first" in error["message"]
    assert (await api.client.get("/v1/rules/second")).status_code == 404

    # The holder itself may change its rule; another scope is free.
    assert (
        await api.client.put(
            "/v1/rules/first", json={"sku": SKU, "location_id": "S1", "safety_stock": 1}
        )
    ).status_code == 200
    assert (await api.client.put("/v1/rules/second", json={"sku": SKU})).status_code == 200


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"safety_stock": -1}, "safety_stock"),
        ({"safety_stock": 1.5}, "safety_stock"),
        ({"safety_stok": 1}, "unknown field"),
        ({"channel_buffers": {"Web Shop": 1}}, "Web Shop"),
        ({"channel_buffers": {"online": -2}}, "channel_buffers"),
        ({"channel_buffers": [1]}, "channel_buffers"),
        ({"rule_id": "another"}, "differs from the path"),
        ({"sku": "bad sku"}, "sku"),
        ({"location_id": ""}, "location_id"),
        ([], "JSON object"),
        ({"safety_stock": -1, "extra": True}, "; "),  # every problem, joined
    ],
)
async def test_invalid_rule_bodies_are_400(api: Api, body: Any, needle: str) -> None:
    response = await api.client.put("/v1/rules/r-1", json=body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_argument"
    assert needle in error["message"]


async def test_invalid_rule_id_is_400(api: Api) -> None:
    for method in ("GET", "PUT", "DELETE"):
        kwargs: dict[str, Any] = {"json": {}} if method == "PUT" else {}
        response = await api.client.request(method, "/v1/rules/bad%20id", **kwargs)
        assert response.status_code == 400, method
        assert error_of(response)["code"] == "invalid_argument"


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
