"""What the Redis Cluster tests share: the session cluster's settings and a store on
it (fixtures), and records and SKU names to write."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest

from availability.ats import LocationAvailability, SkuAvailability
from dev.redis_cluster import DevRedisCluster
from infra.config import Settings
from infra.store import AvailabilityStore
from tests.integration.conftest import make_settings

SKUS = [f"SKU-{n:03d}" for n in range(60)]


def record(sku: str, on_hand: int) -> SkuAvailability:
    return SkuAvailability(sku, (LocationAvailability("S1", on_hand, 0, 0, 0, 0, {}),), None)


@pytest.fixture
def cluster_settings(redis_cluster: DevRedisCluster, settings: Settings) -> Settings:
    return make_settings(
        settings.broker,
        redis_cluster.url,
        settings.data_dir,
        topic_prefix=settings.topic_prefix,
        redis_cluster=True,
    )


@pytest.fixture
async def store(cluster_settings: Settings) -> AsyncIterator[AvailabilityStore]:
    store = AvailabilityStore.for_settings(cluster_settings)
    assert store.cluster
    try:
        yield store
    finally:
        await store.close()


def ats_of(tail: bytes | None) -> int:
    assert tail is not None
    return int(orjson.loads(b"{" + tail)["ats"])
