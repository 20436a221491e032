"""A Redis Cluster master that dies is replaced by its replica, and the service goes
on (README "Redis Cluster"): a cluster of three masters with a replica each, the
real HTTP API reading through the failover, writes landing on the promoted replica,
and the dead node coming back as a replica."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from dev.redis_cluster import DevRedisCluster, cluster_ports
from infra.config import Settings
from infra.store import AvailabilityStore
from tests.integration.cluster_support import SKUS, record
from tests.integration.conftest import StartService, make_settings
from tests.integration.support import auth_headers, wait_http_ready

#: How long reads may fail while a replica takes over (node timeout 2 s, election,
#: the API's slot map refreshed).
FAILOVER_WINDOW = 15.0


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevRedisCluster]:
    with DevRedisCluster(
        cluster_ports(6), tmp_path_factory.mktemp("redis-failover"), replicas=1
    ) as cluster:
        yield cluster


def node(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2.0)


def role(port: int) -> str:
    client = node(port)
    try:
        return str(client.execute_command("ROLE")[0].decode())
    finally:
        client.close()


def replica_of(cluster: DevRedisCluster, master: int) -> int:
    for port in cluster.ports:
        if port == master:
            continue
        client = node(port)
        try:
            info: dict[str, Any] = client.info("replication")
        finally:
            client.close()
        if info.get("role") == "slave" and int(info["master_port"]) == master:
            return port
    raise AssertionError(f"no replica of {master}")


def wait_replicated(master: int, timeout: float = 10.0) -> None:
    """Until the master's replica has every write the master has."""
    deadline = time.monotonic() + timeout
    client = node(master)
    try:
        while True:
            info: dict[str, Any] = client.info("replication")
            replica = info.get("slave0")
            if replica and int(replica["offset"]) >= int(info["master_repl_offset"]):
                return
            assert time.monotonic() < deadline, f"replica of {master} behind: {info}"
            time.sleep(0.05)
    finally:
        client.close()


async def read_all(client: httpx.AsyncClient, skus: list[str]) -> dict[str, int]:
    """Each SKU's HTTP answer: its ATS, or -status when the read failed."""
    answers = {}
    for sku in skus:
        response = await client.get(f"/v1/availability/{sku}")
        answers[sku] = (
            response.json()["ats"] if response.status_code == 200 else -response.status_code
        )
    return answers


async def test_a_master_that_dies_is_replaced_by_its_replica(
    replicated: DevRedisCluster, settings: Settings, start_service: StartService
) -> None:
    s = make_settings(
        settings.broker,
        replicated.url,
        settings.data_dir,
        topic_prefix=settings.topic_prefix,
        redis_cluster=True,
    )
    store = AvailabilityStore.for_settings(s)
    skus = SKUS[:30]
    try:
        assert await store.write_records([record(sku, 10 + n) for n, sku in enumerate(skus)], 100)
        expected = {sku: 10 + n for n, sku in enumerate(skus)}
        victim = store.client.get_node_from_key(store.sku_key(skus[0]))
        assert victim is not None
        master = int(victim.port)
        successor = replica_of(replicated, master)
        wait_replicated(master)
        on_victim = [
            sku
            for sku in skus
            if int(store.client.get_node_from_key(store.sku_key(sku)).port) == master
        ]
        assert 0 < len(on_victim) < len(skus)

        # The API alone: its reads need Redis only (no worker, so no /readyz).
        api = start_service("services.http", s, name="api")
        await wait_http_ready(s.http_port, path="/healthz", timeout=90, process=api)
        base = f"http://127.0.0.1:{s.http_port}"
        async with httpx.AsyncClient(base_url=base, timeout=10, headers=auth_headers()) as client:
            assert await read_all(client, skus) == expected
            replicated.kill_node(master)
            killed = time.monotonic()
            failures: list[float] = []
            while True:
                answers = await read_all(client, skus)
                if answers == expected:
                    break
                failures.append(time.monotonic() - killed)
                # Only the dead master's SKUs may fail meanwhile, and only as 503.
                wrong = {k: v for k, v in answers.items() if v != expected[k]}
                assert set(wrong) <= set(on_victim), wrong
                assert set(wrong.values()) <= {-503}, wrong
                assert time.monotonic() - killed < FAILOVER_WINDOW, wrong
                await asyncio.sleep(0.2)
            assert role(successor) == "master"
            recovered_after = time.monotonic() - killed

            # Writes after the failover land on the promoted replica.
            moved = on_victim[0]
            assert await store.write_records([record(moved, 99)]) == [101]
            owner = store.client.get_node_from_key(store.sku_key(moved))
            assert owner is not None and int(owner.port) == successor
            expected[moved] = 99
            assert await read_all(client, skus) == expected

            # The dead node comes back as a replica of its successor, with its data.
            replicated.start_node(master)
            deadline = time.monotonic() + FAILOVER_WINDOW
            while role(master) != "slave":
                assert time.monotonic() < deadline, "the old master did not rejoin as a replica"
                await asyncio.sleep(0.2)
            replicated.wait_ok()
            wait_replicated(successor)
            assert await read_all(client, skus) == expected
        for handle in start_service.handles:
            assert handle.running, handle.tail()
    finally:
        await store.close()
    # How long the dead master's SKUs were unreadable (kept for the log).
    print(f"failover: reads answered after {recovered_after:.1f} s, {len(failures)} rounds failed")
