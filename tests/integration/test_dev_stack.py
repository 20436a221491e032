"""The development stack the integration tests stand on: topics and Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import time
from pathlib import Path

import httpx
import orjson
import pytest

from dev.redis_server import redis_answers
from infra.config import Settings
from infra.topics import create_topics
from tests.integration.conftest import StartService
from tests.integration.support import consume_all, produce, settings_env, topic_partitions


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
    stack.kill(signal.SIGINT)
    assert stack.wait(timeout=60) == 0
    assert "[stack] api stopped" in stack.log_text()
    # The Shopify stand-in and the push to it (README "Shopify push").
    assert "   Shopify    stand-in http://127.0.0.1:" in stack.log_text()
    assert "[stack] push stopped (exit 0)" in stack.log_text()
    assert "[stack] Shopify stand-in stopped" in stack.log_text()
