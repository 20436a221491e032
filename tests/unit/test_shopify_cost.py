"""Calculated query cost as Shopify documents it (dev.shopify_admin.cost)."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import OperationDefinitionNode, parse

from dev.shopify_admin.cost import actual_cost, requested_cost
from dev.shopify_admin.prepare import Documents, coerce_variables
from dev.shopify_admin.schema import admin_schema
from infra import shopify_documents as docs


@pytest.fixture(scope="module")
def documents() -> Documents:
    return Documents(admin_schema().schema)


def cost(documents: Documents, query: str, variables: dict[str, Any] | None = None) -> int:
    doc = documents.load(query, None)
    values = coerce_variables(documents.schema, doc, variables or {})
    return requested_cost(documents.schema, doc.operation, doc.fragments, values)


def test_scalars_and_enums_are_free_objects_cost_one(documents: Documents) -> None:
    assert cost(documents, '{ inventoryItem(id: "gid://shopify/InventoryItem/1") { id sku } }') == 1
    nested = """{ inventoryItem(id: "x") { inventoryLevel(locationId: "y") {
        quantities(names: ["available"]) { name quantity } } } }"""
    assert cost(documents, nested) == 3  # item, level, the quantities list (one object)


def test_connection_is_two_plus_first_times_a_node(documents: Documents) -> None:
    assert cost(documents, "{ inventoryItems(first: 10) { nodes { id } } }") == 2 + 10
    edges = "{ inventoryItems(first: 7) { edges { cursor node { id } } pageInfo { hasNextPage } } }"
    assert cost(documents, edges) == 2 + 7
    both = "{ inventoryItems(last: 4) { nodes { id } edges { node { id } } } }"
    assert cost(documents, both) == 2 + 4  # the same nodes, counted once


def test_nested_connections_multiply(documents: Documents) -> None:
    query = """{ inventoryItems(first: 10) { nodes { id
        inventoryLevels(first: 5) { nodes { location { id } } } } } }"""
    # 2 + 10 x (item 1 + levels (2 + 5 x (level 1 + location 1)))
    assert cost(documents, query) == 2 + 10 * (1 + 2 + 5 * 2)


def test_page_size_from_variables(documents: Documents) -> None:
    query = "query Q($n: Int!) { inventoryItems(first: $n) { nodes { id } } }"
    assert cost(documents, query, {"n": 250}) == 252
    assert cost(documents, query, {"n": 1}) == 3


SET_VARIABLES: dict[str, Any] = {
    "idempotencyKey": "k",
    "input": {"name": "available", "reason": "correction", "quantities": []},
}


def test_mutation_costs_ten_whatever_its_payload(documents: Documents) -> None:
    assert cost(documents, docs.SET_QUANTITIES, SET_VARIABLES) == 10
    richer = docs.SET_QUANTITIES.replace(
        "inventoryAdjustmentGroup { id }",
        "inventoryAdjustmentGroup { id changes { name delta item { id } location { id } } }",
    )
    assert cost(documents, richer, SET_VARIABLES) == 10


def test_interface_costs_its_dearest_selection(documents: Documents) -> None:
    query = """{ node(id: "x") { id
        ... on InventoryItem { inventoryLevel(locationId: "y") { location { id } } }
        ... on Location { name } } }"""
    assert cost(documents, query) == 1 + 2


def test_skipped_fields_cost_nothing(documents: Documents) -> None:
    query = "query Q($s: Boolean!) { inventoryItems(first: 50) @skip(if: $s) { nodes { id } } }"
    assert cost(documents, query, {"s": True}) == 0
    assert cost(documents, query, {"s": False}) == 52


def test_actual_cost_counts_what_came_back(documents: Documents) -> None:
    query = '{ inventoryItems(first: 50) { nodes { id inventoryLevel(locationId: "l") { id } } } }'
    doc = documents.load(query, None)
    values = coerce_variables(documents.schema, doc, {})
    data = {
        "inventoryItems": {
            "nodes": [
                {"id": "a", "inventoryLevel": None},
                {"id": "b", "inventoryLevel": {"id": "x"}},
            ]
        }
    }
    assert requested_cost(documents.schema, doc.operation, doc.fragments, values) == 2 + 50 * 2
    assert actual_cost(documents.schema, doc.operation, doc.fragments, values, data) == 2 + 2 + 2


def test_canonical_documents_costs_are_pinned(documents: Documents) -> None:
    search = {"query": docs.sku_search(["A"]), "first": 250}
    assert cost(documents, docs.ITEMS_BY_SKU, search) == 252
    assert (
        cost(documents, docs.ITEMS_WITH_LEVEL, {**search, "locationId": "gid://shopify/Location/1"})
        == 752
    )
    assert cost(documents, docs.LOCATIONS, {"first": 250}) == 252
    assert cost(documents, docs.SET_QUANTITIES, SET_VARIABLES) == 10


def test_operation_is_the_one_named(documents: Documents) -> None:
    doc = documents.load(
        "query A { locations(first: 1) { nodes { id } } } query B { location { id } }", "B"
    )
    assert isinstance(doc.operation, OperationDefinitionNode) and doc.root_fields == ("location",)
    assert parse(docs.SET_QUANTITIES)  # parses on its own too
