"""Shopify order webhooks into our figures, end to end: the Shopify stand-in places,
cancels and fulfils orders and sends its signed webhooks to a real HTTP API process,
whose events a real worker folds. What the API serves is compared with an independent
recomputation of the events published (``tests.reference``) and with the stand-in's
own inventory."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from dev.processes import process_env
from infra.config import Settings
from infra.shopify_config import ShopifyTarget
from infra.store import AvailabilityStore
from infra.topics import create_topics
from services.cli.dead_letters import DeadLetter, parse_dead_letter
from services.webhooks.signature import sign
from tests.integration.conftest import SettingsFactory, StartService, make_settings
from tests.integration.shopify_support import CLIENT_SECRET, TOKEN, Shop
from tests.integration.shopify_support import shop as shop
from tests.integration.shopify_support import standin as standin
from tests.integration.support import (
    REPO_ROOT,
    ProcessHandle,
    auth_headers,
    consume_all,
    produce,
    wait_http_ready,
)
from tests.reference import recompute

SECRET_ENV = "SHOPIFY_TEST_CLIENT_SECRET"
TOKEN_ENV = "SHOPIFY_TEST_ACCESS_TOKEN"
TARGET = "standin"
PATH = "/v1/webhooks/shopify"
AS_OF = (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
#: Our ERP's view of the stand-in's seeded shop (shopify_support.shop).
BALANCES = [
    {"type": "erp.balance", "event_id": f"erp-{loc}", "sku": "SKU-1", "location_id": loc,
     "on_hand": on_hand, "as_of": AS_OF}
    for loc, on_hand in (("STORE-001", 12), ("WH-1", 40))
]  # fmt: skip


def target(shop: Shop) -> ShopifyTarget:
    return ShopifyTarget.model_validate(
        {
            "name": TARGET,
            "shop_domain": shop.standin.shop,
            "admin_url": shop.standin.base_url,
            "access_token": {"env": TOKEN_ENV},
            "client_secret": {"env": SECRET_ENV},
            "locations": {name: shop.locations[name] for name in ("STORE-001", "WH-1")},
        }
    )


def now_micros() -> int:
    return time.time_ns() // 1000


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.1)


@dataclass
class Stack:
    settings: Settings
    shop: Shop
    client: httpx.AsyncClient
    api: ProcessHandle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}{PATH}"

    async def figures(self, sku: str = "SKU-1") -> dict[str, Any]:
        answer = await self.client.get(f"/v1/availability/{sku}")
        return dict(answer.json()) if answer.status_code == 200 else {}

    async def location(self, location: str, sku: str = "SKU-1") -> dict[str, Any]:
        found = await self.figures(sku)
        return next((x for x in found.get("locations", []) if x["location_id"] == location), {})

    async def until_location(self, location: str, **expected: int) -> None:
        async def reached() -> bool:
            got = await self.location(location)
            return all(got.get(name) == value for name, value in expected.items())

        await until(reached, f"SKU-1 at {location} {expected}: {await self.location(location)}")

    async def until_delivered(self, count: int) -> list[dict[str, Any]]:
        async def delivered() -> bool:
            deliveries = await asyncio.to_thread(self.shop.standin.deliveries)
            return len(deliveries) >= count and all(d["state"] != "pending" for d in deliveries)

        await until(delivered, f"{count} webhook deliveries")
        return list(await asyncio.to_thread(self.shop.standin.deliveries))

    async def metric(self, name: str, **labels: str) -> float | None:
        """A sample of the API's /metrics (None: not there)."""
        text = (await self.client.get("/metrics")).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return None

    async def published(self) -> list[dict[str, Any]]:
        records = await consume_all(self.settings, self.settings.reservations_topic, idle=0.3)
        return [orjson.loads(r.value) for r in records if r.value is not None]

    async def dead_letters(self) -> list[tuple[DeadLetter, dict[str, Any]]]:
        """The dead letters, each with its context (which webhook, order and line)."""
        records = await consume_all(self.settings, self.settings.dlq_topic, idle=0.3)
        return [
            (
                parse_dead_letter(r.partition, r.offset, r.key, r.value),
                orjson.loads(r.value or b"{}").get("context", {}),
            )
            for r in records
        ]


def shopify_headers(
    body: bytes, topic: str, shop: str, webhook_id: str, secret: str
) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-shopify-topic": topic,
        "x-shopify-shop-domain": shop,
        "x-shopify-webhook-id": webhook_id,
        "x-shopify-hmac-sha256": sign(body, SecretStr(secret)),
        "x-shopify-api-version": "2026-10",
    }


@pytest.fixture
async def stack(
    shop: Shop, settings_factory: SettingsFactory, start_service: StartService
) -> AsyncIterator[Stack]:
    settings = settings_factory(
        shopify_targets=[target(shop)],
        shopify_webhook_default_locations={TARGET: "WH-1"},  # where online orders are held
    )
    await create_topics(settings)
    env = {SECRET_ENV: CLIENT_SECRET, TOKEN_ENV: TOKEN}
    start_service("streams", settings, extra_env=env)
    api = start_service("services.http", settings, extra_env=env)
    await wait_http_ready(settings.http_port, timeout=90, process=api)
    shop.standin.webhooks(
        url=f"http://127.0.0.1:{settings.http_port}{PATH}",
        secret=CLIENT_SECRET,
        retry_delays=[0.3, 0.6, 1.2, 2.4],
    )
    await produce(settings, settings.erp_topic, BALANCES)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{settings.http_port}", timeout=10, headers=auth_headers()
    ) as client:
        stack = Stack(settings, shop, client, api)
        await stack.until_location("WH-1", on_hand=40)
        await stack.until_location("STORE-001", on_hand=12)
        yield stack
    store = AvailabilityStore.from_url(settings.redis_url, settings.redis_key_prefix)
    keys = [k async for k in store.client.scan_iter(match=f"{store.prefix}:*", count=1000)]
    if keys:
        await store.client.delete(*keys)
    await store.close()


async def test_orders_move_our_figures_as_the_reference_fold_says(stack: Stack) -> None:
    standin = stack.shop.standin
    # A POS order: held at the order's location.
    placed = standin.checkout("STORE-001", [{"sku": "SKU-1", "quantity": 2}], source="pos")
    await stack.until_location("STORE-001", on_hand=12, reserved=2, ats=10)
    assert stack.shop.available("SKU-1", "STORE-001") == 10  # Shopify says the same
    standin.order_action(placed["order"]["id"], "cancel")
    await stack.until_location("STORE-001", on_hand=12, reserved=0, ats=12)

    # An online order names no location: held at the target's default, WH-1.
    online = standin.checkout("WH-1", [{"sku": "SKU-1", "quantity": 5}])
    assert online["order"]["location_id"] is None
    await stack.until_location("WH-1", on_hand=40, reserved=5, ats=35)
    standin.order_action(online["order"]["id"], "fulfill")  # orders/fulfilled + fulfillments/create
    await stack.until_location("WH-1", on_hand=35, reserved=0, ats=35)

    deliveries = await stack.until_delivered(5)
    assert [d["topic"] for d in deliveries] == [
        "orders/create", "orders/cancelled", "orders/create", "orders/fulfilled",
        "fulfillments/create",
    ]  # fmt: skip
    assert all([a["status"] for a in d["attempts"]] == [200] for d in deliveries)
    assert max(a["seconds"] for d in deliveries for a in d["attempts"]) < 5

    events = await stack.published()
    assert Counter(e["type"] for e in events) == {
        "reservation.created": 2,
        "reservation.released": 1,
        "reservation.fulfilled": 2,  # one per fulfilment topic, the same event
    }
    assert len({e["event_id"] for e in events}) == 4
    expected = recompute([*BALANCES, *events], now_micros())["SKU-1"]
    await until(lambda: _equal(stack, expected), f"the served figures equal {expected}")
    for location in ("STORE-001", "WH-1"):
        assert (await stack.location(location))["ats"] == stack.shop.available("SKU-1", location)


async def _equal(stack: Stack, expected: dict[str, Any]) -> bool:
    return await stack.figures() == expected


async def test_only_signed_webhooks_of_a_known_shop_are_taken(stack: Stack) -> None:
    standin = stack.shop.standin
    order = standin.checkout(
        "STORE-001", [{"sku": "SKU-1", "quantity": 1}], source="pos", webhook=False
    )["order"]
    body = orjson.dumps(order)
    domain = standin.shop

    def headers(**changes: Any) -> dict[str, str]:
        made = shopify_headers(body, "orders/create", domain, "hook-1", CLIENT_SECRET)
        for name, value in changes.items():
            key = f"x-shopify-{name.replace('_', '-')}"
            if value is None:
                made.pop(key)
            else:
                made[key] = value
        return made

    forged = sign(body, SecretStr("not-the-client-secret"))
    refused = [
        (headers(hmac_sha256=None), body, 401, "no X-Shopify-Hmac-Sha256"),
        (headers(hmac_sha256=forged), body, 401, "does not match"),
        (headers(), body.replace(b'"quantity":1', b'"quantity":9'), 401, "does not match"),
        (headers(shop_domain="other.myshopify.com"), body, 401, "unknown shop"),
        (headers(topic=None), body, 400, "no X-Shopify-Topic"),
        (headers(), b"x" * (1024 * 1024 + 1), 413, "exceeds"),
    ]
    async with httpx.AsyncClient(timeout=10) as shopify:  # no bearer token, as Shopify
        for sent_headers, sent_body, status, message in refused:
            answer = await shopify.post(stack.url, content=sent_body, headers=sent_headers)
            assert answer.status_code == status, (message, answer.text)
            assert message in answer.json()["error"]["message"]
        taken = await shopify.post(stack.url, content=body, headers=headers())
        assert taken.status_code == 200, taken.text
        assert taken.json() == {"outcome": "published", "events": 1, "dead_letters": 0}
        # Signed but not an order: taken (Shopify would retry for hours) and dead-lettered.
        junk = b'{"not": "an order"'
        signed = shopify_headers(junk, "orders/create", domain, "hook-2", CLIENT_SECRET)
        answer = await shopify.post(stack.url, content=junk, headers=signed)
        assert answer.json()["outcome"] == "dead_lettered"
    [event] = await stack.published()  # nothing from the refused ones
    assert (event["type"], event["quantity"]) == ("reservation.created", 1)
    [(letter, context)] = await stack.dead_letters()
    assert (letter.topic, letter.original) == ("shopify:orders/create", junk)
    assert context["webhook_id"] == "hook-2"
    assert (
        await stack.metric(
            "availability_shopify_webhooks_total", topic="orders/create", outcome="unauthenticated"
        )
        == 4
    )
    assert (
        await stack.metric("availability_shopify_webhook_dead_letters_total", reason="malformed")
        == 1
    )
    assert CLIENT_SECRET not in stack.api.log_text() and forged not in stack.api.log_text()


async def test_a_webhook_delivered_twice_gives_one_set_of_events(stack: Stack) -> None:
    standin = stack.shop.standin
    placed = standin.checkout(
        "STORE-001",
        [{"sku": "SKU-1", "quantity": 3}],
        source="pos",
        webhook={"deliver_twice": True},  # the copy follows 50 ms later
    )
    first, second = await stack.until_delivered(2)
    assert first["webhook_id"] == second["webhook_id"] == placed["webhooks"][0]
    assert first["state"] == second["state"] == "delivered"
    await stack.until_location("STORE-001", reserved=3, ats=9)

    # The same delivery again, long after: a repeat, answered 200, nothing published.
    body = orjson.dumps(first["payload"])
    again = shopify_headers(body, "orders/create", standin.shop, first["webhook_id"], CLIENT_SECRET)
    async with httpx.AsyncClient(timeout=10) as shopify:
        answer = await shopify.post(stack.url, content=body, headers=again)
    assert answer.json() == {"outcome": "duplicate", "events": 0, "dead_letters": 0}
    [event] = await stack.published()
    line = placed["order"]["line_items"][0]["id"]
    assert event["reservation_id"] == f"shopify:{TARGET}:{placed['order']['id']}:{line}"
    await stack.until_location("STORE-001", reserved=3, ats=9)


async def test_an_order_we_cannot_map_is_taken_and_dead_lettered(stack: Stack) -> None:
    standin = stack.shop.standin
    seeded = standin.seed(
        locations=[{"name": "POPUP"}],  # a shop location our target does not map
        items=[{"sku": None, "levels": {"STORE-001": {"available": 5}}}],  # no SKU
    )
    standin.set_levels("SKU-1", "POPUP", available=5)
    no_sku = seeded["items"]["None"]["gid"]
    mixed = standin.checkout(
        "STORE-001",
        [{"sku": "SKU-1", "quantity": 1}, {"inventory_item_id": no_sku, "quantity": 1}],
        source="pos",
    )
    popup = standin.checkout("POPUP", [{"sku": "SKU-1", "quantity": 2}], source="pos")
    deliveries = await stack.until_delivered(2)
    # Taken at once: Shopify does not retry what retrying cannot fix.
    assert all([a["status"] for a in d["attempts"]] == [200] for d in deliveries)
    await stack.until_location("STORE-001", reserved=1, ats=11)  # the mapped line

    letters = sorted(await stack.dead_letters(), key=lambda found: found[0].reason)
    assert len(letters) == 2
    (no_sku_letter, no_sku_context), (popup_letter, popup_context) = letters
    assert no_sku_letter.reason.endswith("has no SKU")
    assert no_sku_context["webhook_id"] == mixed["webhooks"][0]
    assert no_sku_context["line_item_id"] == mixed["order"]["line_items"][1]["id"]
    assert "is not in the location map of target 'standin'" in popup_letter.reason
    assert popup_context["webhook_id"] == popup["webhooks"][0]
    for letter, _ in letters:
        assert letter.topic == stack.settings.reservations_topic  # where a replay goes
    for reason in ("no_sku", "unmapped_location"):
        assert (
            await stack.metric("availability_shopify_webhook_dead_letters_total", reason=reason)
            == 1
        )

    # Once the shop's location is known, the dead letter is replayed with it.
    replayed = subprocess.run(
        [sys.executable, "-m", "services.cli", "dead-letters", "replay", "--id",
         popup_letter.id, "--patch", '{"location_id": "STORE-001"}'],
        env=process_env(stack.settings), cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    await stack.until_location("STORE-001", reserved=3, ats=9)


async def test_a_broker_that_does_not_answer_gets_503_within_shopifys_5_s(
    shop: Shop, redis_url: str, tmp_path: Path, start_service: StartService
) -> None:
    # A "broker" that accepts connections and never answers, then none at all.
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    settings = make_settings(
        f"kafka://127.0.0.1:{port}", redis_url, tmp_path / "data", shopify_targets=[target(shop)]
    )
    api = start_service(
        "services.http", settings, extra_env={SECRET_ENV: CLIENT_SECRET, TOKEN_ENV: TOKEN}
    )
    await wait_http_ready(settings.http_port, timeout=60, path="/healthz", process=api)
    order = shop.standin.checkout(
        "STORE-001", [{"sku": "SKU-1", "quantity": 1}], source="pos", webhook=False
    )["order"]
    body = orjson.dumps(order)
    url = f"http://127.0.0.1:{settings.http_port}{PATH}"
    store = AvailabilityStore.from_url(settings.redis_url, settings.redis_key_prefix)
    try:
        async with httpx.AsyncClient(timeout=10) as shopify:
            for attempt in ("silent", "gone"):
                headers = shopify_headers(
                    body, "orders/create", shop.standin.shop, "h-9", CLIENT_SECRET
                )
                started = time.monotonic()
                answer = await shopify.post(url, content=body, headers=headers)
                took = time.monotonic() - started
                assert answer.status_code == 503, (attempt, answer.text)
                assert "retry" in answer.json()["error"]["message"]
                assert took < 4.5, (attempt, took)
                # Not marked: Shopify's retry will be processed.
                assert await store.client.get(store.webhook_key(TARGET, "h-9")) is None
                silent.close()  # from now on, connections are refused
                await silent.wait_closed()
    finally:
        await store.close()
    assert api.running
