"""The sizing benchmark's in-process part: the state it measures is the worker's fold
of every SKU-location (restored whole from the journal), its per-unit figures are
per SKU-location or per changed SKU, and its command line refuses what it cannot run."""

from __future__ import annotations

import pytest

from loadtests.bench_sizing import measure_state, parse_args


def test_state_figures_are_per_sku_location_and_per_changed_sku() -> None:
    small = measure_state(4, 5)
    large = measure_state(2, 50)
    assert small["sku_locations"] == 20 and large["sku_locations"] == 100
    for figures in (small, large):
        assert 100 < figures["state_bytes_per_sku_location"] < 2_000
        assert figures["delta_bytes_per_sale"] > 0
        assert figures["journal_summary_bytes_per_sku_location"] > 20
        assert figures["feed_record_bytes_per_sku"] > 0
    # A changed SKU writes the location that changed: ten times the locations, the
    # same bytes; nor does the journal's summary per SKU-location grow.
    ratio = large["record_bytes_per_sku"] / small["record_bytes_per_sku"]
    assert 0.9 < ratio < 1.1
    assert large["journal_summary_bytes_per_sku_location"] == pytest.approx(
        small["journal_summary_bytes_per_sku_location"], rel=0.1
    )


def test_command_line() -> None:
    params, _, _ = parse_args(["--quick", "--locations", "20,500"])
    assert params.locations == (20, 500)
    assert params.sku_locations == 20_000 and params.rounds == 1
    with pytest.raises(SystemExit):
        parse_args(["--locations", "20,x"])
    with pytest.raises(SystemExit):
        parse_args(["--locations", "1000", "--sku-locations", "500"])
