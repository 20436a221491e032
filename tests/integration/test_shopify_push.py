"""The push to Shopify as real processes: the push (``python -m services.push``), the
Shopify stand-in as a real server, the development broker and Redis; change-feed
records are published by the test (one test runs the worker too)."""

from __future__ import annotations

import subprocess
import sys
from types import MappingProxyType

import orjson

from availability.ats import LocationAvailability, SkuAvailability
from dev.processes import process_env
from dev.shopify_admin.client import StandIn
from infra.config import Settings
from infra.store import AvailabilityStore
from tests.integration.conftest import StartService
from tests.integration.push_support import (
    TOKEN_ENV,
    assert_no_call_applied_twice,
    feed_record,
    push_settings,
    seed_shop,
    shop_levels,
    target,
    wait_for,
)
from tests.integration.shopify_support import TOKEN
from tests.integration.shopify_support import standin as standin
from tests.integration.support import produce


async def test_figures_reach_the_shop_and_unknown_items_are_listed(
    settings: Settings, start_service: StartService, standin: StandIn
) -> None:
    locations = seed_shop(standin, ["SKU-1", "SKU-2"])
    s = push_settings(settings, [target(standin, locations)])
    start_service("services.push", s, extra_env={TOKEN_ENV: TOKEN})
    await produce(
        s,
        s.changes_topic,
        [
            feed_record("SKU-1", 1, {"STORE-001": 5, "WH-1": 40}),
            feed_record("SKU-2", 1, {"STORE-001": 3}),
            feed_record("NOT-IN-SHOP", 1, {"STORE-001": 9}),
            feed_record("SKU-1", 2, {"STORE-001": 4, "WH-1": 40, "ELSEWHERE": 7}),
        ],
    )
    want = {("SKU-1", "STORE-001"): 4, ("SKU-1", "WH-1"): 40, ("SKU-2", "STORE-001"): 3}
    wait_for(lambda: shop_levels(standin) == want)
    assert all(c["outcome"] != "invalid" for c in standin.calls())
    assert_no_call_applied_twice(standin)


def cli(s: Settings, *args: str) -> tuple[int, str]:
    """``python -m services.cli`` with the test's settings; (exit code, output)."""
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=process_env(s, {TOKEN_ENV: TOKEN}),
        capture_output=True,
        timeout=120,
        check=False,
    )
    return result.returncode, result.stdout.decode() + result.stderr.decode()


async def test_status_lists_unmapped_skus_and_resync_corrects_the_shop(
    settings: Settings, start_service: StartService, standin: StandIn
) -> None:
    locations = seed_shop(standin, ["SKU-1", "SKU-2"])
    s = push_settings(settings, [target(standin, locations)])
    start_service("services.push", s, extra_env={TOKEN_ENV: TOKEN})
    await produce(
        s,
        s.changes_topic,
        [feed_record("SKU-1", 1, {"STORE-001": 5}), feed_record("GHOST", 1, {"STORE-001": 2})],
    )
    wait_for(lambda: shop_levels(standin).get(("SKU-1", "STORE-001")) == 5)
    searches = [c for c in standin.calls() if c.get("operationName") == "ItemsBySku"]
    assert len(searches) == 1  # an unknown SKU is asked about once, not in a loop
    code, out = cli(s, "push", "status")
    assert code == 0, out
    assert "main (standin.myshopify.com): running" in out and "unmapped SKUs    1: GHOST" in out
    code, out = cli(s, "push", "status", "--json")
    status = orjson.loads(out.splitlines()[0])
    assert status["unmapped"] == ["GHOST"] and status["last_success"] is not None

    # A merchant edits the level behind the push's back; resync reads and corrects it
    # from our serving record.
    store = AvailabilityStore.from_url(s.redis_url, s.redis_key_prefix)
    try:
        availability = SkuAvailability(
            "SKU-2", (LocationAvailability("STORE-001", 8, 1, 0, 0, 0, MappingProxyType({})),), None
        )
        await store.write_records([availability])
    finally:
        await store.close()
    standin.set_levels("SKU-2", "STORE-001", available=3)
    code, out = cli(s, "push", "resync", "--target", "main", "--sku", "SKU-2")
    assert code == 0, out
    assert "1 level(s) checked, 1 corrected" in out
    assert shop_levels(standin)[("SKU-2", "STORE-001")] == 7
    code, out = cli(s, "push", "resync", "--target", "nope")
    assert code == 2 and "no target 'nope'" in out
