"""The HTTP API (contract section 6) against real Redis and the development broker.

Each test serves ``create_app(settings)`` with uvicorn on a free loopback port in the
test's event loop, and seeds serving records the way the stream processor writes
them: domain events folded with ``availability.state``, ``build_availability`` with
a ``RuleBook``, ``AvailabilityStore.write_records``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from availability.ats import view
from tests.integration.http_api_support import (
    OTHER_SKU,
    SKU,
    Api,
    api,
    availability_of,
    error_of,
    seed,
    stock_events,
)
from tests.integration.support import (
    mark_serving_layer_complete,
)

__all__ = ["api"]  # the fixture


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
