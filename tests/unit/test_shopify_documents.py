"""The push's documents (infra.shopify_documents) against the real 2026-10 schema."""

from __future__ import annotations

import pytest
from graphql import parse, validate

from dev.shopify_admin.prepare import IDEMPOTENT_REQUIRED, Documents
from dev.shopify_admin.schema import admin_schema
from infra import shopify_documents as docs


@pytest.mark.parametrize("name", sorted(docs.ALL))
def test_every_document_is_valid_against_the_real_schema(name: str) -> None:
    schema = admin_schema().schema
    document = parse(docs.ALL[name])
    assert validate(schema, document) == []
    loaded = Documents(schema).load(docs.ALL[name], None)  # Shopify's own checks too
    assert loaded.operation.name is not None and loaded.operation.name.value == name


def test_the_mutation_carries_its_idempotency_key() -> None:
    loaded = Documents(admin_schema().schema).load(docs.SET_QUANTITIES, None)
    assert loaded.is_mutation and set(loaded.root_fields) <= IDEMPOTENT_REQUIRED


def test_schema_requires_what_the_push_relies_on() -> None:
    schema = admin_schema().schema
    quantity_input = schema.get_type("InventoryQuantityInput")
    assert quantity_input is not None
    fields = quantity_input.fields  # type: ignore[attr-defined]
    assert set(fields) == {"changeFromQuantity", "inventoryItemId", "locationId", "quantity"}
    codes = schema.get_type("InventorySetQuantitiesUserErrorCode")
    assert codes is not None
    for code in (
        "CHANGE_FROM_QUANTITY_STALE",
        "IDEMPOTENCY_CONCURRENT_REQUEST",
        "IDEMPOTENCY_KEY_PARAMETER_MISMATCH",
        "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED",
        "INVALID_INVENTORY_ITEM",
        "INVALID_LOCATION",
    ):
        assert code in codes.values  # type: ignore[attr-defined]
    idempotent = schema.get_directive("idempotent")
    assert idempotent is not None and "key" in idempotent.args
