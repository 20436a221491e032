"""Redis Cluster mode (``Settings.redis_cluster``, README "Redis Cluster") against a
real local cluster of 3 masters (the session's ``redis_cluster``): the serving writes
and the change feed's marks, single and batch reads, the reservation scripts and the
worker's second look at reservation lines (read your writes), with keys spread over
every node and no cross-slot command; a watch of SKUs on every node."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import MaxConnectionsError

from availability.ats import LocationAvailability, SkuAvailability
from dev.redis_cluster import DevRedisCluster
from infra.config import Settings
from infra.hold_checks import HoldChecks
from infra.records import encode_whole
from infra.redis_cluster_node import ClusterNode, acquire
from infra.reservation_store import ReservationStore
from infra.serving_marks import SERVING_MARKS
from infra.store import AvailabilityStore
from services.grpc.watch import Update, WatchHub
from streams.hold_sweep import HoldSweep
from tests.integration import test_faults
from tests.integration.cluster_support import SKUS, ats_of, cluster_settings, record, store
from tests.integration.conftest import StartService
from tests.integration.grpc_support import watch
from tests.integration.scenario import mixed_stream
from tests.integration.support import produce
from tests.integration.test_operations import drop_serving_keys, reads_until_rebuilt, run_cli
from tests.integration.test_stream_processor import (
    grpc_api,
    now_micros,
    publish,
    start_stack,
    until_equal,
)
from tests.reference import recompute

__all__ = ["cluster_settings", "store"]  # fixtures


async def keys_per_node(cluster: DevRedisCluster, pattern: str) -> dict[int, int]:
    counts = {}
    for port in cluster.ports:
        client = aioredis.Redis(host="127.0.0.1", port=port)
        try:
            counts[port] = len([k async for k in client.scan_iter(match=pattern, count=1000)])
        finally:
            await client.aclose()
    return counts


async def test_writes_marks_and_reads_spread_over_every_node(
    store: AvailabilityStore, redis_cluster: DevRedisCluster
) -> None:
    versions = await store.write_records([record(sku, n) for n, sku in enumerate(SKUS)], 100)
    assert versions == [100] * len(SKUS)
    counts = await keys_per_node(redis_cluster, f"{store.prefix}:sku:*")
    assert sum(counts.values()) == len(SKUS)
    assert all(count > 0 for count in counts.values()), counts

    await store.mark_published((sku, 100) for sku in SKUS)
    # Unchanged and marked: nothing for the feed to carry.
    assert await store.write_records([record(sku, n) for n, sku in enumerate(SKUS)]) == [0] * 60
    # A change bumps the version of that record only.
    changed = await store.write_records([record(SKUS[0], 99), record(SKUS[1], 1)])
    assert changed == [101, 0]

    tail = await store.read_tail(SKUS[0], "online")
    assert tail is not None and b'"ats":99' in tail
    tails = await store.read_tails([*SKUS[:30], "NEVER-SEEN"], "online")
    assert tails[-1] is None
    assert [
        t is not None and b'"ats":%d' % (99 if i == 0 else i) in t for i, t in enumerate(tails[:30])
    ] == [True] * 30
    versions_read = await store.read_versions(SKUS[:3])
    assert versions_read[0] == (101, record(SKUS[0], 99))
    assert versions_read[2] == (100, record(SKUS[2], 2))


async def test_scripts_reload_on_every_master_after_a_flush(store: AvailabilityStore) -> None:
    assert await store.write_records([record(sku, 5) for sku in SKUS[:20]], 100) == [100] * 20
    await store.client.script_flush()  # every master forgets them
    assert await store.write_records([record(sku, 6) for sku in SKUS[:20]], 200) == [101] * 20
    await store.client.script_flush()
    await store.mark_published((sku, 101) for sku in SKUS[:20])
    assert await store.write_records([record(sku, 6) for sku in SKUS[:20]]) == [0] * 20


async def test_holds_are_placed_counted_and_handed_over_per_slot(store: AvailabilityStore) -> None:
    holds = ReservationStore(store)
    skus = SKUS[:12]
    await store.write_records([record(sku, 3) for sku in skus], 100)
    now = 1_000
    far = 2**42
    for sku in skus:
        placed = await holds.place(sku, f"r-{sku}", "online", 2, ["S1"], now, far)
        assert placed.location_id == "S1"
        refused = await holds.place(sku, f"q-{sku}", "online", 2, ["S1"], now, far)
        assert refused.location_id is None and refused.best_free == 1
    # Reads count the live holds as reserved (read your writes).
    tails = await store.read_tails(skus, "online")
    assert all(t is not None and b'"ats":1' in t for t in tails), tails
    figures = await holds.figures(skus)
    assert all(len(h) == 1 for _, h in figures)
    # The worker's write hands the holds over in the same step.
    handed = {sku: [f"r-{sku}"] for sku in skus}
    folded = [
        SkuAvailability(s, (LocationAvailability("S1", 3, 2, 0, 0, 0, {}),), None) for s in skus
    ]
    await store.write_records(folded, 200, handed_over=handed)
    assert all(not h for _, h in await holds.figures(skus))
    assert all(t is not None and b'"ats":1' in t for t in await store.read_tails(skus, "online"))
    assert await holds.claim("res-1", {"state": "placing"}, 60_000) is None
    assert await holds.claim("res-1", {"state": "placing"}, 60_000) == {"state": "placing"}


def reserved(figures: SkuAvailability | None) -> int:
    assert figures is not None
    [location] = figures.locations
    return location.reserved


async def test_holds_are_read_announced_and_looked_at_again_on_every_node(
    store: AvailabilityStore, cluster_settings: Settings
) -> None:
    """Read your writes on a cluster: a hold placed bumps the version and is announced
    on the SKU's shard (a watch sees it), batch reads and the packed writes report the
    live holds per SKU, and the worker's checks (one key per partition) are noted,
    taken, refreshed and rescheduled slot by slot."""
    skus = SKUS[30:42]
    holds = ReservationStore(store)
    checks = HoldChecks(store, cluster_settings.partitions)
    assert await store.write_records([record(sku, 5) for sku in skus], 100) == [100] * 12
    owners = {store.client.get_node_from_key(store.sku_key(sku)).name for sku in skus}
    assert len(owners) == 3, owners
    hub = WatchHub(store, max_watches=10, subscribe_timeout=5.0)
    try:
        watch = await hub.open(skus, "online", None)
        updates = watch.updates()
        assert {(u.sku, u.version) for u in [await anext(updates) for _ in skus]} == {
            (sku, 100) for sku in skus
        }
        now = 1_000
        far = 2**42
        await checks.note([(sku, f"r-{sku}") for sku in skus], now)
        for sku in skus:
            placed = await holds.place(sku, f"r-{sku}", "online", 2, ["S1"], now, far)
            assert placed.change is not None
            assert (placed.change.version, reserved(placed.change.served)) == (101, 2)
        announced = {}
        async with asyncio.timeout(10):
            while len(announced) < len(skus):
                update = await anext(updates)
                announced[update.sku] = (update.version, update.answer["ats"])
        assert announced == {sku: (101, 3) for sku in skus}
    finally:
        await hub.close("test over")

    # Batch reads of the served view (the read script packed per master).
    assert [(v, reserved(f)) for v, f in await store.read_versions(skus)] == [(101, 2)] * 12
    tails = await store.read_tails(skus, "online")
    assert all(t is not None and b'"ats":3' in t for t in tails), tails
    # The packed write script's reply: unchanged records report their
    # pending version and the live holds per location.
    encoded = [encode_whole(record(sku, 5)) for sku in skus]
    replies, counts = await store.write_encoded(encoded, 200)
    assert ([r.version for r in replies], counts.handed_over, counts.expired) == ([101] * 12, 0, 0)
    assert [r.held for r in replies] == [{"S1": 2}] * 12
    await store.mark_published((sku, 101) for sku in skus)

    # The checks: one sorted set per partition, each on its own slot.
    partitions = sorted({checks.partition_of(sku) for sku in skus})
    due = [c for p in partitions for c in await checks.due(p, now, 100)]
    assert sorted(c.sku for c in due) == skus
    # Past every deadline the sweep purges each hold, announces it and drops the check.
    sweep = HoldSweep(
        checks, None, owned=lambda: frozenset(partitions), owns=lambda s: True, clock=lambda: far
    )
    assert await sweep.sweep() == 12
    assert (sweep.expired, sweep.errors) == (12, 0)
    assert [(v, reserved(f)) for v, f in await store.read_versions(skus)] == [(102, 0)] * 12
    assert all([not await checks.due(p, far, 100) for p in partitions])
    replies, counts = await store.write_encoded(encoded, 300)
    assert [(r.version, r.held) for r in replies] == [(102, {})] * 12


async def test_a_watch_follows_skus_on_every_node(
    store: AvailabilityStore, redis_cluster: DevRedisCluster
) -> None:
    skus = SKUS[:12]
    hub = WatchHub(store, max_watches=10, subscribe_timeout=5.0)
    try:
        watch = await hub.open(skus, "online", None)  # the store's first call
        owners = {store.client.get_node_from_key(store.sku_key(sku)).name for sku in skus}
        assert len(owners) == 3, owners
        assert len(hub._pubsubs) == 3  # one subscription connection per master
        updates = watch.updates()
        initial = [await anext(updates) for _ in skus]
        assert {(u.sku, u.version, u.initial) for u in initial} == {(s, 0, True) for s in skus}
        for first, figure in ((100, 1), (None, 7)):
            await store.write_records([record(sku, figure) for sku in skus], first)
            changed = {}
            async with asyncio.timeout(10):
                while len(changed) < len(skus):
                    update = await anext(updates)
                    changed[update.sku] = (update.version, update.answer["ats"], update.initial)
            version = 100 if first else 101
            assert changed == {sku: (version, figure, False) for sku in skus}
        # Unwatching unsubscribes on each owner; a second watch subscribes again.
        await hub.release(watch)
        again = await hub.open(skus[:2], "online", None)
        assert [u.version async for u in _take(again.updates(), 2)] == [101, 101]
    finally:
        await hub.close("test over")


async def _take(updates: AsyncIterator[Update], count: int) -> AsyncIterator[Update]:
    for _ in range(count):
        yield await anext(updates)


async def test_the_stack_on_a_cluster_serves_watches_rebuilds_and_survives_a_master_restart(
    cluster_settings: Settings, start_service: StartService, redis_cluster: DevRedisCluster
) -> None:
    settings = cluster_settings
    distinct, deliveries = mixed_stream(seed=43, skus=60, events_per_sku=8)
    watched = [f"W-{n}" for n in range(12)]
    client = await start_stack(start_service, settings)
    async with client, grpc_api(start_service, settings) as stub:
        await publish(settings, deliveries)
        expected = recompute(distinct, now_micros())
        await until_equal(client, expected, timeout=60)
        counts = await keys_per_node(redis_cluster, f"{settings.redis_key_prefix}:sku:*")
        assert sum(counts.values()) == len(expected)
        assert all(count > 0 for count in counts.values()), counts
        first = sorted(expected)[0]
        assert (await client.get(f"/v1/availability/{first}")).json() == expected[first]

        # A watch of SKUs whose records live on all three masters.
        store = AvailabilityStore.for_settings(settings)
        try:
            await store.ping()
            owners = {store.client.get_node_from_key(store.sku_key(s)).name for s in watched}
        finally:
            await store.close()
        assert len(owners) == 3, owners
        stream = watch(stub, watched)
        await stream.read_initial(len(watched))
        balances = [
            {
                "event_id": f"w{n}",
                "type": "erp.balance",
                "sku": sku,
                "location_id": "S1",
                "on_hand": 10 + n,
                "as_of": "2026-11-22T09:00:00Z",
            }
            for n, sku in enumerate(watched)
        ]
        await produce(settings, settings.erp_topic, balances)
        seen: dict[str, int] = {}
        async with asyncio.timeout(30):
            while len(seen) < len(watched):
                message = await stream.read(timeout=30)
                seen[message.availability.sku] = message.availability.ats
        assert seen == {sku: 10 + n for n, sku in enumerate(watched)}
        await stream.close()
        expected.update(recompute(balances, now_micros()))
        await until_equal(client, expected, timeout=10)

        # The serving keys lost (every master flushed of this deployment's keys).
        assert await drop_serving_keys(settings) > len(expected)
        await reads_until_rebuilt(client, expected, timeout=60)
        done = run_cli(settings, "rebuild", "--timeout", "60")
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.rstrip().endswith("serving layer complete")

        # A master restarted empty (no persistence) while serving: its share of the
        # records is gone, the others' are not; the epoch is voided and rebuilt.
        marks = f"{settings.redis_key_prefix}:{SERVING_MARKS}"
        serving_owner = await owner_port(settings, marks)
        port = next(p for p in redis_cluster.ports if p != serving_owner)
        redis_cluster.stop_node(port)
        try:
            await asyncio.sleep(0.5)
        finally:
            redis_cluster.start_node(port)
        redis_cluster.wait_ok()
        statuses = await reads_until_rebuilt(client, expected, timeout=90)
        assert 200 in statuses
        assert (await keys_per_node(redis_cluster, f"{settings.redis_key_prefix}:sku:*"))[port] > 0
        for handle in start_service.handles:
            assert handle.running, handle.tail()
    # Built at start, after the keys were lost, on the CLI's request, after the restart.
    worker_log = start_service.handles[0].log_text()
    assert worker_log.count("serving layer: partitions") >= 4, worker_log[-3000:]


async def owner_port(settings: Settings, key: str) -> int:
    store = AvailabilityStore.for_settings(settings)
    try:
        await store.ping()
        node = store.client.get_node_from_key(key)
        return int(node.port)
    finally:
        await store.close()


async def test_a_burst_beyond_the_connections_per_master_waits_for_them(
    cluster_settings: Settings,
) -> None:
    """``max_connections`` is per master; a burst of calls beyond it waits for a free
    connection (at most ``POOL_TIMEOUT``) instead of failing: single reads (redis-py's
    commands), batch reads (packed per master) and redis-py's cluster pipeline."""
    store = AvailabilityStore.for_settings(cluster_settings, max_connections=2)
    try:
        skus = SKUS[:30]
        assert await store.write_records([record(s, n) for n, s in enumerate(skus)], 100) == [
            100
        ] * len(skus)
        singles = [store.read_tail(s, "online") for s in skus]
        batches = [store.read_tails(skus, "online") for _ in range(10)]
        pipelines = [store.read_versions(skus) for _ in range(10)]
        results = await asyncio.gather(*singles, *batches, *pipelines)  # 50 calls at once
        assert [ats_of(t) for t in results[:30]] == list(range(30))
        for tails in results[30:40]:
            assert [ats_of(t) for t in tails] == list(range(30))
        for versions in results[40:]:
            assert versions == [(100, record(s, n)) for n, s in enumerate(skus)]
        cluster = store.client
        assert isinstance(cluster, RedisCluster)
        nodes = cluster.get_primaries()
        assert len(nodes) == 3
        assert max(len(node._connections) for node in nodes) == 2

        # Both connections to one master taken: a call for it waits, bounded ...
        node = cluster.get_node_from_key(store.sku_key(skus[0]))
        assert isinstance(node, ClusterNode)
        taken = [await acquire(node), await acquire(node)]
        with pytest.raises(MaxConnectionsError):
            await node.wait_for_room(timeout=0.2)
        read = asyncio.create_task(store.read_tail(skus[0], "online"))
        await asyncio.sleep(0.3)
        assert not read.done()
        # ... and goes on as soon as one is given back.
        node.release(taken.pop())
        assert ats_of(await asyncio.wait_for(read, 2)) == 0
        node.release(taken.pop())
    finally:
        await store.close()


async def test_workers_killed_at_random_moments_on_a_cluster(
    cluster_settings: Settings, start_service: StartService
) -> None:
    """The fault test of ``test_faults`` (two workers, three SIGKILLs while events
    arrive, ending in the state of an uninterrupted run) with its Redis a cluster."""
    await test_faults.test_workers_killed_at_random_moments_end_as_an_uninterrupted_run(
        cluster_settings, start_service
    )


async def test_a_broker_that_goes_away_and_comes_back_on_a_cluster(
    redis_cluster: DevRedisCluster, start_service: StartService, tmp_path: Path
) -> None:
    """The broker fault of ``test_faults`` (the broker stopped for 3 s, back empty, the
    topics recreated) with its Redis a cluster: reads go on from the cluster, /readyz
    503 for the broker, then new events are folded."""
    await test_faults.broker_away_and_back(
        redis_cluster.url, start_service, tmp_path, redis_cluster=True
    )
