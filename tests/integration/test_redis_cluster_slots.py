"""Redis Cluster slots that move under a running store (README "Redis Cluster"): a
slot moved at once (MOVED: the packed writes run again through redis-py's pipeline,
with the same replies) and a slot half migrated (ASK: writes, reads, the reservation
scripts and batches follow it; scripts that empty a SKU's holds are not stopped
halfway), against the session's real 3-master cluster."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from availability.ats import LocationAvailability, SkuAvailability
from dev.redis_cluster import DevRedisCluster
from infra.records import encode_whole
from infra.redis_batch import RedisBatch
from infra.reservation_store import ReservationStore
from infra.store import AvailabilityStore
from tests.integration.cluster_support import SKUS, ats_of, cluster_settings, record, store

__all__ = ["cluster_settings", "store"]  # fixtures


class SlotMigration:
    """A slot moved to another master in steps, as ``redis-cli --cluster reshard``
    does: ``begin`` (IMPORTING on the target, MIGRATING on the source), ``migrate``
    some of its keys, ``finish`` (the rest of its keys, then SETSLOT NODE everywhere)."""

    def __init__(self, cluster: DevRedisCluster, slot: int, target_port: int) -> None:
        self.slot = slot
        self.target_port = target_port
        self.clients = {port: aioredis.Redis(host="127.0.0.1", port=port) for port in cluster.ports}
        self.ids: dict[int, str] = {}
        self.source_port = 0

    async def begin(self) -> None:
        for port, client in self.clients.items():
            self.ids[port] = (await client.execute_command("CLUSTER", "MYID")).decode()
        ranges = await self.clients[self.target_port].execute_command("CLUSTER", "SLOTS")
        self.source_port = next(
            int(master[1]) for first, last, master, *_ in ranges if first <= self.slot <= last
        )
        assert self.source_port != self.target_port
        await self.clients[self.target_port].execute_command(
            "CLUSTER", "SETSLOT", self.slot, "IMPORTING", self.ids[self.source_port]
        )
        await self.clients[self.source_port].execute_command(
            "CLUSTER", "SETSLOT", self.slot, "MIGRATING", self.ids[self.target_port]
        )

    async def migrate(self, keys: Sequence[str | bytes]) -> None:
        """Move ``keys`` (of the slot) to the target in one MIGRATE."""
        await self.clients[self.source_port].execute_command(
            "MIGRATE", "127.0.0.1", self.target_port, "", 0, 5000, "KEYS", *keys
        )

    async def keys_on(self, port: int) -> int:
        return int(
            await self.clients[port].execute_command("CLUSTER", "COUNTKEYSINSLOT", self.slot)
        )

    async def finish(self) -> None:
        source = self.clients[self.source_port]
        while keys := await source.execute_command("CLUSTER", "GETKEYSINSLOT", self.slot, 100):
            await self.migrate(keys)
        for client in self.clients.values():
            await client.execute_command(
                "CLUSTER", "SETSLOT", self.slot, "NODE", self.ids[self.target_port]
            )

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()


def masters_of(cluster: DevRedisCluster, store: AvailabilityStore, sku: str) -> tuple[int, int]:
    """The port of the master that owns ``sku``'s slot, and of another to move it to."""
    owner = int(store.client.get_node_from_key(store.sku_key(sku)).port)
    return owner, next(p for p in cluster.ports if p != owner)


async def move_slot(cluster: DevRedisCluster, slot: int, target_port: int) -> None:
    """Migrate ``slot`` (and its keys) to the master on ``target_port`` at once."""
    migration = SlotMigration(cluster, slot, target_port)
    try:
        await migration.begin()
        await migration.finish()
    finally:
        await migration.close()


async def test_writes_follow_a_slot_moved_under_them(
    store: AvailabilityStore, redis_cluster: DevRedisCluster
) -> None:
    sku = "MOVING-1"
    assert await store.write_records([record(sku, 1), record("STAYS", 1)], 100) == [100, 100]
    _, target = masters_of(redis_cluster, store, sku)
    await move_slot(redis_cluster, key_slot(store.sku_key(sku).encode()), target)
    # The store's slot map is stale now: MOVED, then the batch runs again and lands.
    assert await store.write_records([record(sku, 2), record("STAYS", 2)]) == [101, 101]
    assert int(store.client.get_node_from_key(store.sku_key(sku)).port) == target
    await store.mark_published([(sku, 101), ("STAYS", 101)])
    assert await store.write_records([record(sku, 2), record("STAYS", 2)]) == [0, 0]
    assert await store.read_availability(sku) == record(sku, 2)


async def test_the_write_script_reply_is_the_same_through_the_fallback_pipeline(
    store: AvailabilityStore, redis_cluster: DevRedisCluster
) -> None:
    """A stale slot map sends the batch through redis-py's cluster pipeline: its replies
    of the write script (versions, holds handed over and purged, live holds) read the
    same as the packed path's."""
    sku, other = "MOVING-H", "STAYS-H"
    assert await store.write_records([record(sku, 4), record(other, 4)], 100) == [100, 100]
    holds = ReservationStore(store)
    for name in (sku, other):
        for rid in ("keep", "fold"):
            assert (await holds.place(name, rid, "online", 1, ["S1"], 1_000, 2**42)).change
    _, target = masters_of(redis_cluster, store, sku)
    await move_slot(redis_cluster, key_slot(store.sku_key(sku).encode()), target)
    folded = SkuAvailability(sku, (LocationAvailability("S1", 4, 1, 0, 0, 0, {}),), None)
    replies, counts = await store.write_encoded(
        [encode_whole(folded), encode_whole(record(other, 4))],
        200,
        {sku: ["fold"]},
    )
    assert int(store.client.get_node_from_key(store.sku_key(sku)).port) == target
    versions = [reply.version for reply in replies]
    assert (versions, counts.handed_over, counts.expired) == ([103, 102], 1, 0)
    assert [reply.held for reply in replies] == [{"S1": 1}, {"S1": 2}]


def skus_in_one_slot(count: int) -> list[str]:
    """``count`` SKU names whose keys (hash tag: the SKU) share one slot."""
    slot = key_slot(b"ASK-0")
    names = ["ASK-0"]
    n = 0
    while len(names) < count:
        n += 1
        if key_slot(b"ASK-%d" % n) == slot:
            names.append(f"ASK-{n}")
    return names


async def idle_connections(store: AvailabilityStore, port: int) -> None:
    """Leave the store's pool for the master on ``port`` with an even number (>= 2) of
    idle connections: redis-py's node pool hands them out first in, first out, so an
    ASKING and the command after it used to go out on different connections (the
    command then met MOVED, and again, until the client gave up: "TTL exhausted")."""
    cluster = store.client
    assert isinstance(cluster, RedisCluster)
    node = cluster.get_node(host="127.0.0.1", port=port)
    assert node is not None
    idle = len(node._free)
    wanted = max(2, idle + idle % 2)
    await asyncio.gather(*(cluster.ping(target_nodes=node) for _ in range(wanted)))


async def test_calls_follow_ask_redirections_while_a_slot_migrates(
    store: AvailabilityStore, redis_cluster: DevRedisCluster
) -> None:
    """A slot half migrated (IMPORTING/MIGRATING, the keys of some of its SKUs moved):
    the packed writes, batch and single reads, the hold script and a batch of scripts
    and reads follow the ASK redirections and answer right; once the migration is
    finished (SETSLOT NODE) they follow MOVED as well. Each SKU here has its record and
    its holds (both keys of its scripts) on the same side: a script whose keys are
    split by a migration, or missing on the importing side, is answered TRYAGAIN
    until the slot's migration ends (README "Redis Cluster")."""
    in_slot = skus_in_one_slot(4)
    moving = in_slot[:2]  # the other two stay until the migration is finished
    elsewhere = [s for s in SKUS[:12] if key_slot(s.encode()) != key_slot(in_slot[0].encode())]
    everything = in_slot + elsewhere
    holds = ReservationStore(store)
    now, far = 1_000, 2**42
    assert await store.write_records([record(s, 10) for s in everything], 100) == [100] * len(
        everything
    )
    for sku in in_slot:
        assert (await holds.place(sku, f"first-{sku}", "online", 1, ["S1"], now, far)).change

    owner, target = masters_of(redis_cluster, store, in_slot[0])
    migration = SlotMigration(redis_cluster, key_slot(in_slot[0].encode()), target)
    try:
        await migration.begin()
        await migration.migrate([k for s in moving for k in (store.sku_key(s), store.holds_key(s))])
        assert (await migration.keys_on(owner), await migration.keys_on(target)) == (4, 4)
        await idle_connections(store, target)

        # The packed writes: the moved SKUs' scripts are answered ASK, and run on the
        # importing master.
        versions = await store.write_records([record(s, 9) for s in everything])
        assert versions == [102] * 4 + [101] * len(elsewhere)
        assert (await migration.keys_on(owner), await migration.keys_on(target)) == (4, 4)
        # Batch and single reads (the live hold counted).
        tails = await store.read_tails(everything, "online")
        assert [ats_of(t) for t in tails] == [8] * 4 + [9] * len(elsewhere)
        assert [ats_of(await store.read_tail(s, "online")) for s in in_slot] == [8] * 4
        assert [v for v, _ in await store.read_versions(in_slot)] == [102] * 4
        # The hold script, alone ...
        for sku in in_slot:
            placed = await holds.place(sku, f"second-{sku}", "online", 2, ["S1"], now, far)
            assert placed.location_id == "S1" and placed.change is not None
            assert placed.change.version == 103
        # ... and in a batch with reads and other scripts (whose order on a master a
        # script not yet loaded there may change: a batch runs such a script again).
        batch = RedisBatch(store.client)
        removed = [holds.remove_in(batch, s, f"second-{s}", now) for s in in_slot]
        placed_too = [
            holds.place_in(batch, s, f"third-{s}", "online", 1, ["S1"], now, far) for s in in_slot
        ]
        await batch.run()
        for pending_removal, pending_placement in zip(removed, placed_too, strict=True):
            removal, placement = pending_removal.value(), pending_placement.value()
            assert placement.location_id == "S1"
            assert removal is not None and placement.change is not None
            assert {removal.version, placement.change.version} == {104, 105}
        batch = RedisBatch(store.client)
        figures = holds.figures_in(batch, in_slot)
        marked = store.mark_published_in(batch, [(s, 105) for s in in_slot])
        await batch.run()
        assert [sorted(h.reservation_id for h in held) for _, held in figures.value()] == [
            [f"first-{s}", f"third-{s}"] for s in in_slot
        ]
        marked.value()
        assert await store.write_records([record(s, 9) for s in in_slot]) == [0] * 4
        assert [ats_of(t) for t in await store.read_tails(in_slot, "online")] == [7] * 4

        await migration.finish()
    finally:
        await migration.close()

    # The slot is the target's now: the store's slot map is stale (MOVED).
    versions = await store.write_records([record(s, 7) for s in everything])
    assert versions == [106] * 4 + [102] * len(elsewhere)
    assert int(store.client.get_node_from_key(store.sku_key(in_slot[0])).port) == target
    tails = await store.read_tails(everything, "online")
    assert [ats_of(t) for t in tails] == [5] * 4 + [7] * len(elsewhere)
    for sku in in_slot:
        placed = await holds.place(sku, f"fourth-{sku}", "online", 1, ["S1"], now, far)
        assert placed.location_id == "S1" and placed.change and placed.change.version == 107
    batch = RedisBatch(store.client)
    figures = holds.figures_in(batch, in_slot)
    removed = [holds.remove_in(batch, s, f"fourth-{s}", now) for s in in_slot]
    await batch.run()
    assert [len(held) for _, held in figures.value()] == [3] * 4
    assert [(c := r.value()) is not None and c.version for r in removed] == [108] * 4


async def test_scripts_that_empty_a_skus_holds_while_its_slot_migrates(
    store: AvailabilityStore, redis_cluster: DevRedisCluster
) -> None:
    """On both sides of a slot migration, the scripts that take a SKU's last hold away
    (a release, a write that hands it over, a placing that purges it expired first)
    run whole: Redis stops a script that touches a key it emptied in a migrating slot
    halfway, so the holds a script removes are removed by its last command."""
    in_slot = skus_in_one_slot(6)
    holds = ReservationStore(store)
    now, far = time.time_ns() // 1_000_000, 2**42
    later = now + 3_600_000  # a clock past the deadline of the holds to purge
    assert await store.write_records([record(s, 10) for s in in_slot], 100) == [100] * 6
    for sku in in_slot:
        # The holds to purge lapse by the placing's clock (their key stays: Redis
        # expires it by its own); the others live.
        deadline = later - 1 if in_slot.index(sku) % 3 == 2 else far
        assert (await holds.place(sku, f"only-{sku}", "online", 1, ["S1"], now, deadline)).change

    _, target = masters_of(redis_cluster, store, in_slot[0])
    migration = SlotMigration(redis_cluster, key_slot(in_slot[0].encode()), target)
    try:
        await migration.begin()
        moving = in_slot[3:]
        await migration.migrate([k for s in moving for k in (store.sku_key(s), store.holds_key(s))])
        await idle_connections(store, target)
        released = [in_slot[0], in_slot[3]]
        handed = [in_slot[1], in_slot[4]]
        purged = [in_slot[2], in_slot[5]]
        for sku in released:
            change = await holds.remove(sku, f"only-{sku}", now)
            assert change is not None and change.version == 102
        replies, counts = await store.write_encoded(
            [encode_whole(record(s, 9)) for s in handed],
            None,
            {s: [f"only-{s}"] for s in handed},
        )
        assert ([reply.version for reply in replies], counts.handed_over) == ([102, 102], 2)
        for sku in purged:
            placed = await holds.place(sku, f"next-{sku}", "online", 2, ["S1"], later, far)
            assert (placed.location_id, placed.expired) == ("S1", 1)
        assert [[h.reservation_id for h in held] for _, held in await holds.figures(in_slot)] == [
            [],
            [],
            [f"next-{in_slot[2]}"],
            [],
            [],
            [f"next-{in_slot[5]}"],
        ]
        assert [v for v, _ in await store.read_versions(in_slot)] == [102] * 6
        await migration.finish()
    finally:
        await migration.close()
