"""The development stack the integration tests stand on: topics and Redis."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from dev.redis_server import redis_answers
from infra.config import Settings
from infra.topics import create_topics
from tests.integration.conftest import StartService
from tests.integration.scenario import stamp
from tests.integration.support import (
    consume_all,
    produce,
    settings_env,
    topic_partitions,
    wait_until,
)


async def test_topics_exist_with_configured_partitions(settings: Settings) -> None:
    for topic in settings.partitioned_topics:
        assert await topic_partitions(settings, topic) == set(range(settings.partitions)), topic
    assert await topic_partitions(settings, settings.rules_topic) == {0}
    assert await create_topics(settings) == []  # idempotent


def test_redis_answers(settings: Settings) -> None:
    assert redis_answers(settings.redis_url)


async def test_produce_then_consume_all(settings: Settings) -> None:
    events = [{"event_id": f"e{i}", "type": "pos.sale", "sku": f"SKU-{i % 3}"} for i in range(10)]
    meta = await produce(settings, settings.pos_topic, [*events, b"not json"])
    assert len(meta) == 11
    records = await consume_all(settings, settings.pos_topic, timeout=10)
    assert len(records) == 11
    by_value = {r.value: r.key for r in records}
    for event in events:
        assert by_value[orjson.dumps(event)] == str(event["sku"]).encode()
    assert by_value[b"not json"] is None


def test_settings_env_round_trips(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A child process given settings_env reads back exactly these settings."""
    env = settings_env(settings)
    assert env["AVAILABILITY_TOPIC_PREFIX"] == settings.topic_prefix
    for name in list(os.environ):
        if name.startswith("AVAILABILITY_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings() == settings
    assert Settings().token.get_secret_value() == settings.token.get_secret_value()


async def test_make_run_creates_a_development_credential_and_requires_it(
    settings: Settings, start_service: StartService, tmp_path: Path
) -> None:
    """``python -m dev.stack run`` (what ``make run`` runs) on the session's broker and
    Redis: its development key, printed in the banner, is the credential the APIs take."""
    state_dir = tmp_path / "state"
    stack = start_service("dev.stack", settings, args=["run", "--state-dir", str(state_dir)])
    deadline = time.monotonic() + 120
    while "availability service is running" not in stack.log_text():
        assert stack.running, stack.tail()
        assert time.monotonic() < deadline, stack.tail()
        await asyncio.sleep(0.5)
    key_file = state_dir / "api-key"
    key = key_file.read_text().strip()
    assert key.startswith("avk_")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert f"export AVAILABILITY_TOKEN=$(cat {key_file})" in stack.log_text()
    assert key not in stack.log_text()  # the banner names the file, never the key
    base = f"http://127.0.0.1:{settings.http_port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        assert (await client.get("/v1/availability/SKU-0001")).status_code == 401
        with_key = await client.get(
            "/v1/availability/SKU-0001", headers={"authorization": f"Bearer {key}"}
        )
        assert with_key.status_code == 404  # accepted; the SKU has no events
        await push_and_order_round_trip(settings, client, key, stack.log_text())
    stack.kill(signal.SIGINT)
    assert stack.wait(timeout=60) == 0
    assert "[stack] api stopped" in stack.log_text()
    # The Shopify stand-in and the push to it (README "Shopify push").
    assert "   Shopify    stand-in http://127.0.0.1:" in stack.log_text()
    assert "[stack] push stopped (exit 0)" in stack.log_text()
    assert "[stack] Shopify stand-in stopped" in stack.log_text()


async def push_and_order_round_trip(
    settings: Settings, client: httpx.AsyncClient, key: str, banner: str
) -> None:
    """What make run wires together: a balance reaches the stand-in shop through the
    push, and a checkout in the shop comes back through its signed order webhook as a
    reservation that lowers our figure."""
    found = re.search(r"stand-in (http://127\.0\.0\.1:\d+) \(shop ([^;]+);", banner)
    assert found, banner
    shop_url, shop = found.groups()
    when = stamp(datetime.now(UTC) - timedelta(seconds=5))
    balance = {"event_id": "dev-erp-1", "type": "erp.balance", "sku": "SKU-0001",
               "location_id": "STORE-001", "on_hand": 9, "as_of": when}  # fmt: skip
    await produce(settings, settings.erp_topic, [balance])
    headers = {"authorization": f"Bearer {key}"}

    async def ats() -> int | None:
        answer = await client.get("/v1/availability/SKU-0001", headers=headers)
        return int(answer.json()["ats"]) if answer.status_code == 200 else None

    async def shop_available() -> int | None:
        view = (await client.get(f"{shop_url}/_standin/state", params={"shop": shop})).json()
        item = next(i["id"] for i in view["items"] if i["sku"] == "SKU-0001")
        place = next(x["id"] for x in view["locations"] if x["name"] == "STORE-001")
        for level in view["levels"]:
            if level["inventory_item_id"] == item and level["location_id"] == place:
                return int(level["available"])
        return None

    await wait_until(lambda: _equals(ats, 9), timeout=60)
    await wait_until(lambda: _equals(shop_available, 9), timeout=60)
    order = await client.post(
        f"{shop_url}/_standin/checkout",
        json={"shop": shop, "location": "STORE-001",
              "line_items": [{"sku": "SKU-0001", "quantity": 1}]},
    )  # fmt: skip
    assert order.status_code == 200, order.text
    await wait_until(lambda: _equals(ats, 8), timeout=60)


async def _equals(read: Callable[[], Awaitable[int | None]], expected: int) -> bool:
    return await read() == expected
