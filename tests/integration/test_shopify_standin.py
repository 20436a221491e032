"""The Shopify Admin API stand-in as a real server (``python -m dev.shopify_admin``):
every document the push sends is accepted, invalid ones are refused in Shopify's
shapes, cost and the bucket behave as Shopify documents them, compare-and-set and
idempotency keys, access tokens, faults and the call log. Webhooks:
``test_shopify_webhooks.py``."""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from typing import Any

import httpx
import orjson
import pytest

from infra import shopify_documents as docs
from tests.integration.shopify_support import (
    FORBIDDEN,
    PRODUCTS_ONLY,
    READ_ONLY,
    TOKEN,
    Shop,
    codes,
    set_variables,
)
from tests.integration.shopify_support import shop as shop
from tests.integration.shopify_support import standin as standin

# --------------------------------------------------------------------- documents


def test_every_push_document_is_answered_without_errors(shop: Shop) -> None:
    store = shop.locations["STORE-001"]
    search = docs.sku_search(["SKU-1", "SKU-2"])
    by_sku = shop.gql(docs.ITEMS_BY_SKU, {"query": search, "first": 250})
    assert "errors" not in by_sku
    assert {n["sku"] for n in by_sku["data"]["inventoryItems"]["nodes"]} == {"SKU-1", "SKU-2"}
    assert by_sku["extensions"]["cost"]["requestedQueryCost"] == 252
    assert by_sku["extensions"]["cost"]["actualQueryCost"] == 2 + 2

    with_level = shop.gql(
        docs.ITEMS_WITH_LEVEL, {"query": search, "first": 250, "locationId": store}
    )
    quantities = {
        n["sku"]: {q["name"]: q["quantity"] for q in n["inventoryLevel"]["quantities"]}
        for n in with_level["data"]["inventoryItems"]["nodes"]
    }
    assert quantities == {
        "SKU-1": {"available": 12, "committed": 0, "on_hand": 12},
        "SKU-2": {"available": 3, "committed": 1, "on_hand": 4},
    }

    item = shop.gql(docs.ITEM_LEVEL, {"id": shop.items["SKU-2"], "locationId": store})
    level_id = item["data"]["inventoryItem"]["inventoryLevel"]["id"]
    assert level_id.startswith("gid://shopify/InventoryLevel/")
    level = shop.gql(docs.LEVEL, {"id": level_id})["data"]["inventoryLevel"]
    assert level["item"]["sku"] == "SKU-2" and level["location"]["id"] == store

    locations = shop.gql(docs.LOCATIONS, {"first": 250})["data"]["locations"]["nodes"]
    assert [loc["name"] for loc in locations] == ["STORE-001", "WH-1"]
    assert all(loc["legacyResourceId"] == loc["id"].rsplit("/", 1)[1] for loc in locations)

    done = shop.set_available([("SKU-1", "STORE-001", 9, 12)])
    assert "errors" not in done and done["data"]["inventorySetQuantities"]["userErrors"] == []
    assert done["extensions"]["cost"] == {
        "requestedQueryCost": 10,
        "actualQueryCost": 10,
        "throttleStatus": done["extensions"]["cost"]["throttleStatus"],
    }
    assert shop.available("SKU-1", "STORE-001") == 9


def test_connections_page_with_cursors(shop: Shop) -> None:
    query = docs.sku_search(["SKU-1", "SKU-2", "SKU-3"])
    first = shop.gql(docs.ITEMS_BY_SKU, {"query": query, "first": 2})["data"]["inventoryItems"]
    assert len(first["nodes"]) == 2 and first["pageInfo"]["hasNextPage"] is True
    after = first["pageInfo"]["endCursor"]
    rest = shop.gql(docs.ITEMS_BY_SKU, {"query": query, "first": 2, "after": after})
    page = rest["data"]["inventoryItems"]
    assert [n["sku"] for n in page["nodes"]] == ["SKU-3"] and page["pageInfo"][
        "hasNextPage"
    ] is False
    no_size = shop.gql('{ inventoryItems(query: "sku:SKU-1") { nodes { id } } }')
    assert no_size["errors"][0]["message"] == "you must provide one of first or last"


# --------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("query", "variables", "code", "message"),
    [
        (
            '{ inventoryItem(id: "x") { id colour } }',
            {},
            "undefinedField",
            "Field 'colour' doesn't exist on type 'InventoryItem'",
        ),
        (
            "{ inventoryItem { id } }",
            {},
            "missingRequiredArguments",
            "Field 'inventoryItem' is missing required arguments: id",
        ),
        (
            "{ locations(first: 1, size: 2) { nodes { id } } }",
            {},
            "argumentNotAccepted",
            "Field 'locations' doesn't accept argument 'size'",
        ),
        (
            "query Q($n: Int!) { locations(first: 1) { nodes { id } } }",
            {"n": 1},
            "variableNotUsed",
            "Variable $n is declared by Q but not used",
        ),
        ("{ inventoryItems(first: 1) { nodes } }", {}, "selectionMismatch", None),
        (
            docs.ITEMS_BY_SKU,
            {"query": "sku:A", "first": "ten"},
            "INVALID_VARIABLE",
            "Variable $first of type Int! was provided invalid value",
        ),
        (
            docs.ITEMS_BY_SKU,
            {"first": 1},
            "INVALID_VARIABLE",
            "Variable $query of type String! was provided invalid value",
        ),
    ],
)
def test_invalid_documents_and_variables_are_refused_in_shopify_shape(
    shop: Shop, query: str, variables: dict[str, Any], code: str, message: str | None
) -> None:
    body = shop.gql(query, variables)
    assert "data" not in body
    assert codes(body) == [code]
    error = body["errors"][0]
    assert error["locations"] and {"line", "column"} <= set(error["locations"][0])
    if message is not None:
        assert error["message"] == message
    assert body["extensions"]["cost"]["requestedQueryCost"] == 0


def test_variable_problems_name_each_path(shop: Shop) -> None:
    variables = set_variables(shop, [("SKU-1", "STORE-001", 1, None)])
    variables["input"]["quantities"][0]["quantity"] = None
    variables["input"]["quantities"][0]["colour"] = "red"
    body = shop.gql(docs.SET_QUANTITIES, variables)
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "INVALID_VARIABLE"
    assert error["extensions"]["problems"] == [
        {"path": ["quantities", 0, "quantity"], "explanation": "Expected value to not be null"},
        {
            "path": ["quantities", 0, "colour"],
            "explanation": "Field is not defined on InventoryQuantityInput",
        },
    ]
    assert error["message"] == (
        "Variable $input of type InventorySetQuantitiesInput! was provided invalid value for "
        "quantities.0.quantity (Expected value to not be null), "
        "quantities.0.colour (Field is not defined on InventoryQuantityInput)"
    )


def test_a_value_that_is_not_an_int_names_the_value(shop: Shop) -> None:
    body = shop.gql(docs.ITEMS_BY_SKU, {"query": "sku:A", "first": "ten"})
    problems = body["errors"][0]["extensions"]["problems"]
    assert problems == [{"path": [], "explanation": 'Could not coerce value "ten" to Int'}]


def test_mutation_rules_of_2026_10_are_enforced(shop: Shop) -> None:
    without_key = docs.SET_QUANTITIES.replace(" @idempotent(key: $idempotencyKey)", "").replace(
        ", $idempotencyKey: String!", ""
    )
    variables = set_variables(shop, [("SKU-1", "STORE-001", 5, 12)])
    del variables["idempotencyKey"]
    body = shop.gql(without_key, variables)
    assert codes(body) == ["BAD_REQUEST"]
    assert body["errors"][0]["message"] == (
        "The @idempotent directive is required for this mutation but was not provided."
    )

    omitted = set_variables(shop, [("SKU-1", "STORE-001", 5, 12)])
    del omitted["input"]["quantities"][0]["changeFromQuantity"]
    body = shop.gql(docs.SET_QUANTITIES, omitted)
    assert codes(body) == ["INVALID_FIELD_ARGUMENTS"]
    assert body["data"] == {"inventorySetQuantities": None}

    too_many = set_variables(shop, [("SKU-1", "STORE-001", 5, None)] * 251)
    body = shop.gql(docs.SET_QUANTITIES, too_many)
    assert codes(body) == ["MAX_INPUT_SIZE_EXCEEDED"]
    assert shop.available("SKU-1", "STORE-001") == 12  # none of these applied anything

    unmodelled = shop.gql("{ shop { name } }")
    assert codes(unmodelled) == ["STANDIN_NOT_MODELLED"]


# --------------------------------------------------------------------- access


def test_access_tokens_and_scopes(shop: Shop) -> None:
    standin = shop.standin
    status, body = standin.graphql(docs.LOCATIONS, {"first": 1}, token="shpat_wrong")
    assert status == 401
    assert body == {
        "errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"
    }
    status, body = standin.graphql(docs.LOCATIONS, {"first": 1}, token=FORBIDDEN)
    assert status == 403 and isinstance(body["errors"], str)
    response = standin.http.post(
        standin.graphql_url.replace("2026-10", "2026-07"),
        json={"query": "{ location { id } }"},
        headers={"X-Shopify-Access-Token": TOKEN},
    )
    assert response.status_code == 404

    assert "errors" not in shop.gql(docs.LOCATIONS, {"first": 5}, token=READ_ONLY)
    denied = shop.set_available([("SKU-1", "STORE-001", 1, 12)], token=READ_ONLY)
    assert denied["data"] == {"inventorySetQuantities": None}
    (error,) = denied["errors"]
    assert error["path"] == ["inventorySetQuantities"]
    assert error["extensions"]["code"] == "ACCESS_DENIED"
    assert "write_inventory" in error["extensions"]["requiredAccess"]
    assert shop.available("SKU-1", "STORE-001") == 12

    catalogue = shop.gql(
        docs.ITEM_LEVEL,
        {"id": shop.items["SKU-1"], "locationId": shop.locations["STORE-001"]},
        token=PRODUCTS_ONLY,
    )
    assert catalogue["data"]["inventoryItem"]["sku"] == "SKU-1"  # read_products sees items
    assert catalogue["data"]["inventoryItem"]["inventoryLevel"] is None
    assert codes(catalogue) == ["ACCESS_DENIED"]


# --------------------------------------------------------------------- cost and bucket


def test_bucket_drains_throttles_and_refills_at_the_restore_rate(shop: Shop) -> None:
    standin = shop.standin
    standin.bucket(maximumAvailable=35, restoreRate=0.01, currentlyAvailable=35)
    same = [("SKU-1", "STORE-001", 12, None)]
    for left in (25, 15, 5):
        body = shop.set_available(same)
        assert body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == left
    throttled = shop.set_available(same)
    assert throttled == {
        "errors": [
            {
                "message": "Throttled",
                "extensions": {
                    "code": "THROTTLED",
                    "documentation": "https://shopify.dev/api/usage/rate-limits",
                },
            }
        ],
        "extensions": {
            "cost": {
                "requestedQueryCost": 10,
                "actualQueryCost": None,
                "throttleStatus": {
                    "maximumAvailable": 35.0,
                    "currentlyAvailable": 5,
                    "restoreRate": 0.01,
                },
            }
        },
    }

    standin.bucket(maximumAvailable=100, restoreRate=20, currentlyAvailable=0)
    query = "{ inventoryItems(first: 50) { nodes { id } } }"  # requests 52, returns 3: costs 5
    started = time.monotonic()
    readings = []
    while True:
        body = shop.gql(query)
        readings.append(
            (time.monotonic(), body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"])
        )
        if "errors" not in body:
            break
        assert codes(body) == ["THROTTLED"]
        time.sleep(0.1)
    waited = time.monotonic() - started
    assert 52 / 20 - 0.3 < waited < 52 / 20 + 1.0  # refilled at 20 points/s
    (t0, a0), (t1, a1) = readings[0], readings[-2]
    assert abs((a1 - a0) / (t1 - t0) - 20) < 4
    after = body["extensions"]["cost"]
    assert (after["requestedQueryCost"], after["actualQueryCost"]) == (52, 5)
    assert 47 <= after["throttleStatus"]["currentlyAvailable"] <= 52  # 52 - 5 (+ refill)


def test_single_query_maximum_is_1000(shop: Shop) -> None:
    query = (
        "{ inventoryItems(first: 250) { nodes { inventoryLevels(first: 5) { nodes { id } } } } }"
    )
    before = shop.standin.bucket()["currentlyAvailable"]
    body = shop.gql(query)
    assert codes(body) == ["MAX_COST_EXCEEDED"]
    assert body["errors"][0]["extensions"]["cost"] == 2 + 250 * (1 + 2 + 5)
    assert body["errors"][0]["extensions"]["maxCost"] == 1000
    assert body["errors"][0]["message"].startswith(
        "Query cost is 2002, which exceeds the single query max cost limit (1000)."
    )
    assert body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] >= before


# --------------------------------------------------------------------- compare-and-set


def test_compare_and_set_applies_or_refuses_the_whole_call(shop: Shop) -> None:
    ok = shop.set_available([("SKU-1", "STORE-001", 7, 12), ("SKU-2", "STORE-001", 0, 3)])
    group = ok["data"]["inventorySetQuantities"]["inventoryAdjustmentGroup"]
    assert group["id"].startswith("gid://shopify/InventoryAdjustmentGroup/")
    level = shop.standin.level("SKU-2", "STORE-001")
    assert (level["available"], level["committed"], level["on_hand"]) == (0, 1, 1)

    shop.standin.set_levels("SKU-1", "WH-1", available=38)  # someone else sold two
    stale = shop.set_available([("SKU-1", "STORE-001", 5, 7), ("SKU-1", "WH-1", 30, 40)])
    payload = stale["data"]["inventorySetQuantities"]
    assert payload["inventoryAdjustmentGroup"] is None
    assert payload["userErrors"] == [
        {
            "field": ["input", "quantities", "1", "changeFromQuantity"],
            "message": "The changeFromQuantity value does not match persisted value.",
            "code": "CHANGE_FROM_QUANTITY_STALE",
        }
    ]
    assert shop.available("SKU-1", "STORE-001") == 7  # the good quantity was not applied either
    assert shop.available("SKU-1", "WH-1") == 38

    unchecked = shop.set_available([("SKU-1", "WH-1", 30, None)])  # explicit null skips CAS
    assert unchecked["data"]["inventorySetQuantities"]["userErrors"] == []
    assert shop.available("SKU-1", "WH-1") == 30

    same = shop.set_available([("SKU-1", "WH-1", 30, 30)])
    assert same["data"]["inventorySetQuantities"] == {
        "inventoryAdjustmentGroup": None,
        "userErrors": [],
    }


def test_unknown_items_and_locations(shop: Shop) -> None:
    variables = set_variables(shop, [("SKU-1", "STORE-001", 1, None)])
    quantity = variables["input"]["quantities"][0]
    quantity["inventoryItemId"] = "gid://shopify/InventoryItem/1"
    quantity["locationId"] = "gid://shopify/Location/2"
    errors = shop.gql(docs.SET_QUANTITIES, variables)["data"]["inventorySetQuantities"][
        "userErrors"
    ]
    assert [(e["code"], e["field"][-1]) for e in errors] == [
        ("INVALID_INVENTORY_ITEM", "inventoryItemId"),
        ("INVALID_LOCATION", "locationId"),
    ]


def test_setting_on_hand_moves_available_and_keeps_the_sum(shop: Shop) -> None:
    variables = set_variables(shop, [("SKU-2", "STORE-001", 10, 4)])
    variables["input"]["name"] = "on_hand"
    body = shop.gql(docs.SET_QUANTITIES, variables)
    assert body["data"]["inventorySetQuantities"]["userErrors"] == []
    level = shop.standin.level("SKU-2", "STORE-001")
    assert (level["available"], level["committed"], level["on_hand"]) == (9, 1, 10)


# --------------------------------------------------------------------- idempotency


def test_same_key_same_input_replays_without_applying_twice(shop: Shop) -> None:
    key = str(uuid.uuid4())
    first = shop.set_available([("SKU-1", "STORE-001", 7, 12)], key)
    shop.standin.set_levels("SKU-1", "STORE-001", available=20)  # changes after the first call
    again = shop.set_available([("SKU-1", "STORE-001", 7, 12)], key)
    assert again["data"] == first["data"]  # the first result, same adjustment group
    assert shop.available("SKU-1", "STORE-001") == 20  # not set to 7 a second time

    other = shop.set_available([("SKU-1", "STORE-001", 6, 12)], key)
    (error,) = other["data"]["inventorySetQuantities"]["userErrors"]
    assert error["code"] == "IDEMPOTENCY_KEY_PARAMETER_MISMATCH"


def test_a_lost_answer_is_recovered_by_retrying_with_the_same_key(shop: Shop) -> None:
    shop.standin.fault("status", status=502, phase="after", operation="mutation")
    key = str(uuid.uuid4())
    variables = set_variables(shop, [("SKU-1", "STORE-001", 4, 12)], key)
    status, body = shop.standin.graphql(docs.SET_QUANTITIES, variables, token=TOKEN)
    assert status == 502 and "Bad Gateway" in body
    assert shop.available("SKU-1", "STORE-001") == 4  # applied, though the caller cannot know
    retry = shop.gql(docs.SET_QUANTITIES, variables)
    assert retry["data"]["inventorySetQuantities"]["userErrors"] == []
    assert retry["data"]["inventorySetQuantities"]["inventoryAdjustmentGroup"] is not None
    assert shop.available("SKU-1", "STORE-001") == 4
    assert shop.standin.state()["adjustment_groups"] == 1

    shop.standin.fault("drop", operation="mutation")
    fresh = set_variables(shop, [("SKU-1", "STORE-001", 3, 4)])
    with pytest.raises(httpx.TransportError):
        shop.standin.graphql(docs.SET_QUANTITIES, fresh, token=TOKEN)
    assert shop.available("SKU-1", "STORE-001") == 4  # dropped before it ran
    assert (
        shop.gql(docs.SET_QUANTITIES, fresh)["data"]["inventorySetQuantities"]["userErrors"] == []
    )
    assert shop.available("SKU-1", "STORE-001") == 3


def test_concurrent_requests_with_one_key(shop: Shop) -> None:
    shop.standin.fault("slow", seconds=1.0, operation="mutation")
    variables = set_variables(shop, [("SKU-1", "STORE-001", 2, 12)])
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(shop.gql, docs.SET_QUANTITIES, variables)
        time.sleep(0.3)
        second = shop.gql(docs.SET_QUANTITIES, variables)
        first = slow.result(timeout=10)
    (error,) = second["data"]["inventorySetQuantities"]["userErrors"]
    assert error["code"] == "IDEMPOTENCY_CONCURRENT_REQUEST"
    assert first["data"]["inventorySetQuantities"]["userErrors"] == []
    assert shop.available("SKU-1", "STORE-001") == 2


def test_a_failed_attempt_burns_its_key(shop: Shop) -> None:
    shop.standin.fault("internal_error", operation="mutation")
    variables = set_variables(shop, [("SKU-1", "STORE-001", 2, 12)])
    failed = shop.gql(docs.SET_QUANTITIES, variables)
    assert "data" not in failed and codes(failed) == ["INTERNAL_SERVER_ERROR"]
    assert failed["errors"][0]["extensions"]["requestId"]
    assert shop.available("SKU-1", "STORE-001") == 12
    again = shop.gql(docs.SET_QUANTITIES, variables)
    (error,) = again["data"]["inventorySetQuantities"]["userErrors"]
    assert error["code"] == "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED"
    variables["idempotencyKey"] = str(uuid.uuid4())
    assert (
        shop.gql(docs.SET_QUANTITIES, variables)["data"]["inventorySetQuantities"]["userErrors"]
        == []
    )


# --------------------------------------------------------------------- faults


def test_status_faults_slow_answers_and_probabilities(shop: Shop) -> None:
    standin = shop.standin
    for status in (500, 502, 503):
        standin.fault("status", status=status)
        got, _ = standin.graphql(docs.LOCATIONS, {"first": 1}, token=TOKEN)
        assert got == status
    assert standin.graphql(docs.LOCATIONS, {"first": 1}, token=TOKEN)[0] == 200

    standin.fault("slow", seconds=0.5, operation="query")
    started = time.monotonic()
    assert "errors" not in shop.gql(docs.LOCATIONS, {"first": 1})
    assert time.monotonic() - started >= 0.5

    standin.control(
        "POST", "/faults", {"kind": "status", "status": 503, "probability": 0.5, "seed": 3}
    )
    outcomes = [standin.graphql(docs.LOCATIONS, {"first": 1}, token=TOKEN)[0] for _ in range(30)]
    standin.clear_faults()
    assert set(outcomes) == {200, 503}
    assert standin.graphql(docs.LOCATIONS, {"first": 1}, token=TOKEN)[0] == 200


def test_every_call_is_logged_without_the_token(shop: Shop) -> None:
    since = shop.standin.calls()[-1]["seq"] if shop.standin.calls() else 0
    shop.set_available([("SKU-1", "STORE-001", 11, 12)])
    shop.standin.graphql(docs.LOCATIONS, {"first": 1}, token="shpat_wrong")
    calls = shop.standin.control("GET", "/calls", since=since)
    mutation, refused = calls[-2], calls[-1]
    assert mutation["query"] == docs.SET_QUANTITIES and mutation["token"] == "push"
    assert mutation["variables"]["input"]["quantities"][0]["quantity"] == 11
    assert (mutation["requestedQueryCost"], mutation["actualQueryCost"], mutation["outcome"]) == (
        10,
        10,
        "ok",
    )
    assert refused["outcome"] == "unauthorized" and refused["status"] == 401
    dump = orjson.dumps(shop.standin.control("GET", "/calls")).decode()
    assert TOKEN not in dump and "shpat_wrong" not in dump
