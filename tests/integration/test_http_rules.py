"""The HTTP API's rules (contract section 6: `/v1/rules`) against real Redis and the
development broker: create, read, list, delete, conflicts of scope, bad bodies."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.http_api_support import (
    SKU,
    Api,
    api,
    error_of,
)

__all__ = ["api"]  # the fixture


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
