"""The development stack the integration tests stand on: topics and Redis."""

from __future__ import annotations

from typing import Any

import orjson

from dev.stack import redis_answers
from infra.config import Settings
from infra.topics import create_topics
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


def test_settings_env_round_trips(settings: Settings) -> None:
    env = settings_env(settings)
    assert env["AVAILABILITY_TOPIC_PREFIX"] == settings.topic_prefix
    fields: dict[str, Any] = {k.removeprefix("AVAILABILITY_").lower(): v for k, v in env.items()}
    assert Settings(**fields) == settings
