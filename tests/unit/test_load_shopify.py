"""The flash sale's Shopify figures: the push-lag quantiles and the report's lines."""

from __future__ import annotations

from loadtests.load import render_shopify
from loadtests.shopify_channel import VARIANTS, histogram_quantile_ms

INF = float("inf")


def test_histogram_quantile_interpolates_within_the_bucket_holding_the_rank() -> None:
    # 100 observations: 50 at or below 50 ms, 90 at or below 100 ms, all below 1 s.
    buckets = {0.05: 50.0, 0.1: 90.0, 1.0: 100.0, INF: 100.0}
    assert histogram_quantile_ms(0.5, buckets) == 50.0
    assert histogram_quantile_ms(0.7, buckets) == 75.0  # halfway from 50 to 100 ms
    assert histogram_quantile_ms(0.99, buckets) == 910.0  # 0.1 + 0.9 * 0.9 s
    assert histogram_quantile_ms(0.5, {0.05: 0.0, INF: 0.0}) is None
    # Beyond the last finite bucket: its bound, as Prometheus answers.
    assert histogram_quantile_ms(0.99, {0.05: 1.0, INF: 10.0}) == 50.0


def test_report_names_every_shop_its_policy_and_the_push_lag_oversell() -> None:
    rows = [
        {
            "shop": variant.target,
            "policy": variant.label,
            "location_id": f"LOC-00{n}",
            "units_ordered": 100 + n,
            "checkouts_refused_sold_out": 7,
            "units_oversold_by_shopify": n,
            "units_oversold_by_other_channels": 1,
            "push_set_calls": 50,
            "push_stale_compares": 9,
            "push_points": 500,
            "push_lag_ms": {"levels_set": 60, "p50": 88.0, "p99": None},
        }
        for n, variant in enumerate(VARIANTS)
    ]
    over = {
        "units_ordered_on_shopify": 303,
        "units_oversold_by_channel": {"store": 1, "online": 2, "shopify": 3},
    }
    shopify = {"shops": rows, "webhooks": {"delivered": 303}, "levels_differ_after_settling": []}
    text = "\n".join(render_shopify(over, shopify))
    assert "oversold by channel: stores 1, online 2, Shopify 3" in text
    for variant in VARIANTS:
        assert f"{variant.target:<13} {variant.label}" in text
    assert "(Shopify sold beyond what existed): every-change 0, min-delta 1, low-stock 2" in text
    assert "order webhooks: 303 delivered; shops equal our online ATS after the sale: yes" in text
