"""The push to Shopify as real processes: the push (``python -m services.push``), the
Shopify stand-in as a real server, the development broker and Redis; change-feed
records are published by the test (one test runs the worker too)."""

from __future__ import annotations

import subprocess
import sys
import time
from types import MappingProxyType

import httpx
import orjson
import redis.asyncio as aioredis

from availability.ats import LocationAvailability, SkuAvailability
from dev.processes import process_env
from dev.shopify_admin.client import StandIn
from infra.config import Settings
from infra.store import AvailabilityStore
from tests.integration.conftest import StartService
from tests.integration.push_support import (
    TOKEN_ENV,
    assert_no_call_applied_twice,
    feed_records,
    metric,
    mutations,
    push_settings,
    seed_shop,
    shop_levels,
    target,
    wait_consuming,
    wait_for,
)
from tests.integration.shopify_support import TOKEN
from tests.integration.shopify_support import standin as standin
from tests.integration.support import auth_headers, produce, wait_http_ready, wait_until


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
            *feed_records("SKU-1", 1, {"STORE-001": 5, "WH-1": 40}),
            *feed_records("SKU-2", 1, {"STORE-001": 3}),
            *feed_records("NOT-IN-SHOP", 1, {"STORE-001": 9}),
            *feed_records("SKU-1", 2, {"STORE-001": 4, "WH-1": 40, "ELSEWHERE": 7}),
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
        [*feed_records("SKU-1", 1, {"STORE-001": 5}), *feed_records("GHOST", 1, {"STORE-001": 2})],
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


async def test_a_stale_compare_never_raises_the_shop_on_figures_without_its_sales(
    settings: Settings, start_service: StartService, standin: StandIn
) -> None:
    locations = seed_shop(standin, ["SKU-1"])
    s = push_settings(settings, [target(standin, locations)], push_stale_hold=3.0)
    start_service("services.push", s, extra_env={TOKEN_ENV: TOKEN})
    level = ("SKU-1", "STORE-001")
    await produce(s, s.changes_topic, [*feed_records("SKU-1", 1, {"STORE-001": 10})])
    wait_for(lambda: shop_levels(standin).get(level) == 10)
    # Shopify sells 3 that our figures do not hold yet; ours moves for another reason.
    standin.set_levels("SKU-1", "STORE-001", available=7)
    await produce(s, s.changes_topic, [*feed_records("SKU-1", 2, {"STORE-001": 9})])
    wait_for(lambda: any("STALE" in str(c.get("outcome")) for c in standin.calls()))
    # Re-read: min(ours 9, shop 7) = 7, nothing raised; then a raise is held too.
    await produce(s, s.changes_topic, [*feed_records("SKU-1", 3, {"STORE-001": 12})])
    time.sleep(1.0)
    assert shop_levels(standin)[level] == 7
    assert any(c.get("operationName") == "ItemsWithLevel" for c in standin.calls())
    # Lowering is always safe, hold or not.
    await produce(s, s.changes_topic, [*feed_records("SKU-1", 4, {"STORE-001": 5})])
    wait_for(lambda: shop_levels(standin)[level] == 5)
    # Once the hold is over, our figures (by now with Shopify's sales) may raise it.
    time.sleep(3.0)
    await produce(s, s.changes_topic, [*feed_records("SKU-1", 5, {"STORE-001": 12})])
    wait_for(lambda: shop_levels(standin)[level] == 12)
    assert metric(s.push_metrics_port, "availability_push_disagreements_total", target="main") >= 1
    kinds = {"target": "main", "kind": "stale_compare"}
    assert metric(s.push_metrics_port, "availability_push_failures_total", **kinds) >= 1
    assert_no_call_applied_twice(standin)


async def test_calls_are_paced_by_the_bucket_and_wait_when_throttled(
    settings: Settings, start_service: StartService, standin: StandIn
) -> None:
    skus = [f"SKU-{n}" for n in range(20)]
    locations = seed_shop(standin, skus, bucket={"maximumAvailable": 30, "restoreRate": 10})
    s = push_settings(settings, [target(standin, locations)])
    wait_consuming(start_service("services.push", s, extra_env={TOKEN_ENV: TOKEN}))
    await produce(s, s.changes_topic, [*feed_records("SKU-0", 1, {"STORE-001": 1})])
    want = {("SKU-0", "STORE-001"): 1}
    wait_for(lambda: shop_levels(standin) == want)
    standin.bucket(currentlyAvailable=0)  # another app has just spent the bucket
    for version, sku in enumerate(skus[1:], start=2):
        # One at a time, so that calls follow each other faster than the bucket refills.
        await produce(s, s.changes_topic, [*feed_records(sku, version, {"STORE-001": version})])
        want[(sku, "STORE-001")] = version
        time.sleep(0.1)
    wait_for(lambda: shop_levels(standin) == want, timeout=30)
    calls = standin.calls()
    throttled = [c for c in calls if c["outcome"] == "throttled"]
    # The call after the bucket was emptied behind our back is throttled; the push
    # waits the restore time and sends the same call again (for a mutation: the same
    # idempotency key); every later call is paced by what the answers said.
    assert 1 <= len(throttled) <= 2, [c["outcome"] for c in calls]
    done = [c["variables"] for c in calls if c["outcome"] == "ok"]
    assert all(c["variables"] in done for c in throttled)
    assert len(mutations(standin)) >= 3
    assert (
        metric(s.push_metrics_port, "availability_push_throttled_seconds_total", target="main") > 0
    )
    assert_no_call_applied_twice(standin)


async def test_lost_answers_and_5xx_are_retried_with_the_same_key(
    settings: Settings, start_service: StartService, standin: StandIn
) -> None:
    locations = seed_shop(standin, ["SKU-1", "SKU-2"])
    s = push_settings(settings, [target(standin, locations)])
    standin.fault("status", status=503, phase="after", operation="mutation", count=1)
    standin.fault("drop", phase="after", operation="mutation", count=1)
    standin.fault("status", status=502, phase="before", operation="mutation", count=1)
    push = start_service("services.push", s, extra_env={TOKEN_ENV: TOKEN})
    await produce(s, s.changes_topic, [*feed_records("SKU-1", 1, {"STORE-001": 4, "WH-1": 6})])
    wait_for(lambda: len([c for c in mutations(standin) if c["outcome"] == "ok"]) >= 1)
    standin.fault("internal_error", operation="mutation", count=1)
    await produce(s, s.changes_topic, [*feed_records("SKU-2", 1, {"STORE-001": 2})])
    want = {("SKU-1", "STORE-001"): 4, ("SKU-1", "WH-1"): 6, ("SKU-2", "STORE-001"): 2}
    wait_for(lambda: shop_levels(standin) == want)
    calls = mutations(standin)
    first_key = calls[0]["variables"]["idempotencyKey"]
    same = [c for c in calls if c["variables"]["idempotencyKey"] == first_key]
    # Applied, answer lost (503); applied, connection dropped; then (after a 502 that
    # the stand-in logs without a shop) answered from Shopify's record, not applied again.
    assert [c["outcome"] for c in same] == ["ok+fault:status", "ok+fault:drop", "ok"]
    assert "HTTP 502; retrying" in push.log_path.read_text()
    # INTERNAL_SERVER_ERROR spends the key: the call goes again under a new one.
    internal = [c for c in calls if c["outcome"] == "internal_error"]
    assert len(internal) == 1
    assert internal[0]["variables"]["idempotencyKey"] != calls[-1]["variables"]["idempotencyKey"]
    assert standin.state()["adjustment_groups"] == 2
    assert_no_call_applied_twice(standin)


async def test_401_and_403_stop_their_target_and_the_others_go_on(
    settings: Settings, start_service: StartService, standin: StandIn
) -> None:
    locations = seed_shop(standin, ["SKU-1"])
    standin.put_shop(tokens=[{"token": "shpat_forbidden_x", "label": "x", "forbidden": True}])
    targets = [
        target(standin, locations),
        target(standin, locations, name="revoked", token_env="REVOKED_TOKEN"),
        target(standin, locations, name="unapproved", token_env="UNAPPROVED_TOKEN"),
    ]
    s = push_settings(settings, targets)
    env = {
        TOKEN_ENV: TOKEN,
        "REVOKED_TOKEN": "shpat_revoked",
        "UNAPPROVED_TOKEN": "shpat_forbidden_x",
    }
    push = start_service("services.push", s, extra_env=env)
    await produce(s, s.changes_topic, [*feed_records("SKU-1", 1, {"STORE-001": 3})])
    wait_for(lambda: shop_levels(standin).get(("SKU-1", "STORE-001")) == 3)
    port = s.push_metrics_port
    wait_for(lambda: metric(port, "availability_push_target_up", target="revoked") == 0)
    wait_for(lambda: metric(port, "availability_push_target_up", target="unapproved") == 0)
    assert metric(port, "availability_push_target_up", target="main") == 1
    live = httpx.get(f"http://127.0.0.1:{port}/livez", timeout=5)  # infra.probes
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    await produce(s, s.changes_topic, [*feed_records("SKU-1", 2, {"STORE-001": 8})])
    wait_for(lambda: shop_levels(standin).get(("SKU-1", "STORE-001")) == 8)
    log_text = push.log_path.read_text()
    assert "shopify push to revoked STOPPED: unauthorized" in log_text
    assert "shopify push to unapproved STOPPED: forbidden" in log_text
    assert "shpat_" not in log_text  # no token is ever logged
    code, out = cli(s, "push", "status")
    assert code == 1 and "revoked (standin.myshopify.com): stopped" in out, out


async def test_kill_9_mid_run_then_restart_ends_with_our_figures_and_nothing_applied_twice(
    settings: Settings, start_service: StartService, standin: StandIn
) -> None:
    skus = [f"SKU-{n:03d}" for n in range(120)]
    locations = seed_shop(standin, skus)
    s = push_settings(settings, [target(standin, locations)], push_max_in_flight=2)
    # Calls take a while in the shop, so that the kill finds some under way.
    standin.fault("slow", seconds=0.4, operation="mutation", probability=0.7, seed=7)
    push = start_service("services.push", s, extra_env={TOKEN_ENV: TOKEN})
    wait_consuming(push)
    final: dict[tuple[str, str], int] = {}
    version = 0

    async def round_of(offset: int) -> None:
        nonlocal version
        version += 1
        records = []
        for n, sku in enumerate(skus):
            figures = {"STORE-001": (n + offset) % 17, "WH-1": (n * 3 + offset) % 23}
            records.extend(feed_records(sku, version, figures))
            final.update({(sku, loc): q for loc, q in figures.items()})
        await produce(s, s.changes_topic, records, max_batch_size=65536)

    await round_of(0)
    wait_for(lambda: len(mutations(standin)) >= 1, timeout=30)
    # The next call is held 1.5 s in the shop (then applied): the kill finds it under way.
    standin.clear_faults()
    standin.fault("slow", seconds=1.5, operation="mutation", count=1)
    await round_of(5)
    time.sleep(0.6)
    push.kill()  # SIGKILL
    push.wait(10)
    await round_of(11)
    standin.clear_faults()
    push.start()
    wait_for(lambda: shop_levels(standin) == final, timeout=60)
    assert_no_call_applied_twice(standin)
    # The call under way at the kill was sent again with its key, and answered from
    # the shop's record of it.
    assert "of a previous run sent again: applied" in push.log_path.read_text()
    journal = f"{s.redis_key_prefix}:push:main:inflight"
    client = aioredis.Redis.from_url(s.redis_url)
    try:
        await wait_until(lambda: _empty(client, journal), timeout=10)
    finally:
        await client.aclose()


async def _empty(client: aioredis.Redis, key: str) -> bool:
    return int(await client.hlen(key)) == 0


async def test_policies_over_http_shape_what_the_worker_s_figures_push(
    settings: Settings, start_service: StartService, standin: StandIn
) -> None:
    locations = seed_shop(standin, ["SKU-1"])
    s = push_settings(settings, [target(standin, locations)])
    start_service("streams", s)
    start_service("services.http", s)
    await wait_http_ready(s.http_port, timeout=60)
    push = start_service("services.push", s, extra_env={TOKEN_ENV: TOKEN})
    base = f"http://127.0.0.1:{s.http_port}/v1/push-policies"
    async with httpx.AsyncClient(headers=auth_headers(), timeout=10) as http:
        body = {"min_delta": 5, "max_staleness_s": 3}
        put = await http.put(f"{base}/default", json=body)
        assert put.status_code == 200, put.text
        clash = await http.put(f"{base}/other", json={"sku": None})
        assert clash.status_code == 409 and clash.json()["error"]["code"] == "scope_conflict"
        bad = await http.put(f"{base}/bad", json={"low_stok": 1})
        assert bad.status_code == 400 and "low_stok" in bad.json()["error"]["message"]
        listed = (await http.get(base)).json()["policies"]
        assert [p["policy_id"] for p in listed] == ["default"]
        history = (await http.get(f"{base}/default/history")).json()["history"]
        assert history[0]["action"] == "push_policy.put"
        assert history[0]["actor"]["subject"] == "tests"
        wait_consuming(push)
        at = "2026-11-22T09:00:00Z"
        await produce(s, s.erp_topic, [erp("e1", 100, at)])
        wait_for(lambda: shop_levels(standin).get(("SKU-1", "STORE-001")) == 100, timeout=30)
        await produce(s, s.pos_topic, [sale("s1", 2)])  # 98: below min_delta, waits
        time.sleep(1.0)
        assert shop_levels(standin)[("SKU-1", "STORE-001")] == 100
        wait_for(lambda: shop_levels(standin)[("SKU-1", "STORE-001")] == 98, timeout=10)
        await produce(s, s.pos_topic, [sale("s2", 10)])  # 88: at once
        wait_for(lambda: shop_levels(standin)[("SKU-1", "STORE-001")] == 88, timeout=3)
        # The online buffer of a rule counts; the policy's deletion is audited.
        rule = {"channel_buffers": {"online": 3}}
        assert (await http.put(f"http://127.0.0.1:{s.http_port}/v1/rules/r", json=rule)).is_success
        assert (await http.delete(f"{base}/default")).status_code == 204
        wait_for(lambda: shop_levels(standin)[("SKU-1", "STORE-001")] == 85, timeout=5)
        assert (await http.get(f"{base}/default")).status_code == 404
        history = (await http.get(f"{base}/default/history")).json()["history"]
        assert [h["action"] for h in history] == ["push_policy.put", "push_policy.delete"]


def erp(event_id: str, on_hand: int, as_of: str) -> dict[str, object]:
    return {"event_id": event_id, "type": "erp.balance", "sku": "SKU-1",
            "location_id": "STORE-001", "on_hand": on_hand, "as_of": as_of}  # fmt: skip


def sale(event_id: str, quantity: int) -> dict[str, object]:
    return {"event_id": event_id, "type": "pos.sale", "sku": "SKU-1", "location_id": "STORE-001",
            "quantity": quantity, "occurred_at": "2026-11-22T10:00:00Z"}  # fmt: skip
