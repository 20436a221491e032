"""The load test's bookkeeping: catalogue, ledger and the oversell definition."""

from __future__ import annotations

import pytest

from loadtests.flash_sale import (
    KNOWN_AFTER_US,
    ONLINE,
    SHOPIFY,
    STORE,
    Catalogue,
    Ledger,
    online_oversell,
    oversell,
    oversold_by_channel,
)


def catalogue() -> Catalogue:
    return Catalogue.build(2, 3, 2, (3, 5), (20, 30), "2026-01-01T00:00:00Z", seed=1)


def test_catalogue_has_stock_everywhere_and_round_trips() -> None:
    built = catalogue()
    assert len(built.stock) == (2 + 3) * 2
    assert all(
        3 <= built.stock[(sku, loc)] <= 5 for sku in built.hot_skus for loc in built.locations
    )
    assert all(n >= 20 for (sku, _), n in built.stock.items() if sku in built.regular_skus)
    assert Catalogue.from_data(built.to_data()) == built
    balances = list(built.balances("r"))
    assert {(b["sku"], b["location_id"]): b["on_hand"] for b in balances} == built.stock
    assert len({b["event_id"] for b in balances}) == len(balances)


def test_oversell_counts_units_claimed_beyond_stock_per_location() -> None:
    built = catalogue()
    sku, other = built.hot_skus
    here, there = built.locations
    stock = built.stock[(sku, here)]
    ledger = Ledger()
    for _ in range(stock - 1):
        ledger.sale(sku, here, 1, 0)
    for _ in range(3):  # two units beyond the stock at (sku, here)
        ledger.reservation(sku, here, 1)
    ledger.reservation(other, there, built.stock[(other, there)])  # exactly all of it
    result = oversell(built.stock, ledger.to_data())
    assert result["units_sold_in_stores"] == stock - 1
    assert result["units_reserved_online"] == 3 + built.stock[(other, there)]
    assert result["units_oversold"] == 2
    assert result["sku_locations_oversold"] == 1
    assert result["sku_locations_claimed"] == 2
    assert result["worst"] == [{"sku": sku, "location_id": here, "units": 2}]


def test_nothing_claimed_is_no_oversell_and_unknown_slots_are_refused() -> None:
    built = catalogue()
    assert oversell(built.stock, Ledger().to_data())["units_oversold"] == 0
    ledger = Ledger()
    ledger.reservation("NOPE", built.locations[0], 1)
    with pytest.raises(ValueError, match="NOPE"):
        oversell(built.stock, ledger.to_data())


def test_erp_balance_contains_only_sales_up_to_its_as_of() -> None:
    ledger = Ledger()
    ledger.sale("A", "L", 2, occurred_at_us=100)
    ledger.sale("A", "L", 1, occurred_at_us=200)
    ledger.sale("A", "M", 5, occurred_at_us=50)
    assert ledger.sold_until("A", "L", 99) == 0
    assert ledger.sold_until("A", "L", 100) == 2
    assert ledger.sold_until("A", "L", 1_000) == 3
    assert ledger.sold_until("B", "L", 1_000) == 0


def test_oversell_by_channel_blames_the_claims_made_after_the_stock_ran_out() -> None:
    """At each SKU-location the claims count in the order made: the units beyond what
    the earlier claims left are the later claim's channel's; the channels' shares add
    up to the SKU-location's oversell."""
    built = catalogue()
    sku = built.hot_skus[0]
    here, there = built.locations
    stock = built.stock[(sku, here)]
    ledger = Ledger()
    for n in range(stock - 1):
        ledger.sale(sku, here, 1, occurred_at_us=10 + n)
    ledger.shopify_order(sku, here, 1, at_us=1_000)  # the last unit
    ledger.reservation(sku, here, 1, at_us=1_001)  # Shopify's order not folded yet
    ledger.shopify_order(sku, here, 2, at_us=1_002)  # the shop had not caught up
    ledger.sale(sku, there, built.stock[(sku, there)] + 1, occurred_at_us=5)
    ledger.shopify_order(sku, there, 1, at_us=1)  # before the store's oversized sale
    ledger.shopify_refused(here)
    data = ledger.to_data()
    by_channel = oversold_by_channel(built.stock, data["claims"])
    assert by_channel == {
        STORE: {(sku, there): 2},
        ONLINE: {(sku, here): 1},
        SHOPIFY: {(sku, here): 2},
    }
    result = oversell(built.stock, data)
    assert result["units_ordered_on_shopify"] == 4
    assert result["units_oversold"] == 5
    assert result["units_oversold_by_channel"] == {STORE: 2, ONLINE: 1, SHOPIFY: 2}
    assert data["shopify_refused"] == {here: 1}


def test_oversell_by_channel_refuses_unknown_channels() -> None:
    built = catalogue()
    claim = [0, "fax", built.hot_skus[0], built.locations[0], 1]
    with pytest.raises(ValueError, match="fax"):
        oversold_by_channel(built.stock, [claim])


def test_units_given_back_by_a_released_or_expired_hold_can_be_claimed_again() -> None:
    built = catalogue()
    sku = built.hot_skus[0]
    here = built.locations[0]
    stock = built.stock[(sku, here)]
    ledger = Ledger()
    for n in range(stock):
        ledger.reservation(sku, here, 1, at_us=10 + n)
    ledger.freed(sku, here, 1, at_us=100)  # a cart released
    ledger.reservation(sku, here, 1, at_us=101)  # takes the freed unit: not oversold
    result = oversell(built.stock, ledger.to_data())
    assert result["units_oversold"] == 0
    assert result["units_reserved_online"] == stock
    ledger.reservation(sku, here, 1, at_us=102)  # one beyond
    ledger.freed(sku, here, 1, at_us=103)  # given back later: it was still oversold
    result = oversell(built.stock, ledger.to_data())
    assert result["units_oversold"] == 1
    assert result["units_oversold_by_channel"][ONLINE] == 1
    assert result["units_reserved_online"] == stock


def test_online_oversell_counts_only_what_the_reserve_api_could_see() -> None:
    """Online holds beyond the stock less the live online holds and the other
    channels' claims made KNOWN_AFTER_US before; a till sale a moment before a hold
    (not folded yet) is the by-channel race, not the reserve API's oversell."""
    built = catalogue()
    sku = built.hot_skus[0]
    here, there = built.locations
    stock = built.stock[(sku, here)]
    ledger = Ledger()
    ledger.sale(sku, here, stock, occurred_at_us=1_000)  # sold out in the store
    ledger.reservation(sku, here, 1, at_us=2_000)  # a moment later: not folded yet
    data = ledger.to_data()
    assert online_oversell(built.stock, data["claims"]) == {}
    assert oversell(built.stock, data)["units_oversold_by_channel"][ONLINE] == 1
    ledger.reservation(sku, here, 1, at_us=1_000 + KNOWN_AFTER_US)  # known by then
    assert online_oversell(built.stock, ledger.to_data()["claims"]) == {(sku, here): 1}
    # Online against online: a hold beyond the live holds; one freed at the same
    # instant as the next is placed gives its unit back first.
    there_stock = built.stock[(sku, there)]
    other = Ledger()
    for n in range(there_stock):
        other.reservation(sku, there, 1, at_us=n)
    other.freed(sku, there, 1, at_us=50)
    other.reservation(sku, there, 1, at_us=50)
    assert online_oversell(built.stock, other.to_data()["claims"]) == {}
    other.reservation(sku, there, 2, at_us=60)
    assert online_oversell(built.stock, other.to_data()["claims"]) == {(sku, there): 2}
    assert oversell(built.stock, other.to_data())["units_oversold_by_reserve_api"] == 2
