"""Shopify search syntax as the stand-in reads it, and the push's search builder."""

from __future__ import annotations

import pytest

from dev.shopify_admin.search import SearchUnsupported, matcher, parse
from infra.shopify_documents import sku_search


def test_or_of_skus() -> None:
    match = matcher("sku:A-1 OR sku:B-2")
    assert match("A-1", 1) and match("B-2", 2)
    assert not match("C-3", 3)
    assert not match("A-10", 4)  # a term is the whole value, not a substring


def test_case_insensitive_like_shopify_search() -> None:
    assert matcher("sku:abc")("ABC", 1)


def test_quoted_values_and_prefix() -> None:
    assert matcher('sku:"A B/1"')("A B/1", 1)
    assert matcher(r'sku:"say \"hi\""')('say "hi"', 1)
    assert matcher("sku:TEE-*")("TEE-RED-M", 1)
    assert not matcher("sku:TEE-*")("MUG", 1)


def test_and_binds_tighter_than_or() -> None:
    match = matcher("sku:A id:>5 OR sku:B")
    assert match("A", 6) and not match("A", 5) and match("B", 1)


def test_id_comparators() -> None:
    assert matcher("id:>=10")(None, 10) and not matcher("id:<10")(None, 10)


def test_empty_query_matches_everything() -> None:
    assert matcher(None)(None, 1) and matcher("  ")("x", 2)


@pytest.mark.parametrize(
    "query",
    ["title:shirt", "-sku:A", "NOT sku:A", "(sku:A OR sku:B)", "sku:A OR", "OR sku:A", "hello"],
)
def test_what_is_not_modelled_is_refused(query: str) -> None:
    with pytest.raises(SearchUnsupported):
        parse(query)


def test_sku_search_round_trips_through_the_parser() -> None:
    skus = ["SKU-1", "a.b_c", "with:colon", "path/1", 'quote"d', "back\\slash"]
    query = sku_search(skus)
    assert query.startswith("sku:SKU-1 OR ")
    match = matcher(query)
    assert all(match(sku, i) for i, sku in enumerate(skus))
    assert not match("SKU-2", 99)
    with pytest.raises(ValueError):
        sku_search([])
