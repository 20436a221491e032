"""Completeness of the serving layer (``streams.rebuild``): which partitions' records
are all written since Redis last lost its data. Part of ``AvailabilityStore``.

``{prefix}:serving2`` (hash): ``epoch`` the token of the rebuild under way or done,
``partitions`` how many there are, ``p:<n>`` the epoch in which partition n was
written. In a Redis Cluster the epoch is also kept in ``{prefix}:serving2:{m<n>}`` on
every master, so that a master that lost its data (its share of the records) voids
the epoch as a single Redis losing everything does.

The "2" is the records' layout (one field per location, ``infra.records``): a
deployment upgraded from records of one JSON value each finds no marks of this
layout, so its workers rewrite every record and reads answer "rebuilding" (503)
meanwhile instead of taking the old records for SKUs never seen.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from redis.asyncio.cluster import RedisCluster

from infra.redis_client import RedisClient

# Marks partitions built, only if the epoch they were rebuilt in is still current:
# should Redis lose its data during a rebuild, the rebuild is not counted.
#: The marks' key (below the prefix), named for the records' layout (module docstring).
SERVING_MARKS: Final = "serving2"

_MARK_BUILT = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
for i = 2, #ARGV do redis.call('HSET', KEYS[1], ARGV[i], ARGV[1]) end
return 1
"""

# Drops the serving marks if their epoch is still ARGV[1] (a cluster master lost its
# data): the next begin_rebuild starts a new epoch.
_VOID_EPOCH = """
if redis.call('HGET', KEYS[1], 'epoch') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class ServingLayer:
    """How complete the serving records are: which partitions have all been written
    since Redis last lost its data (``total`` is None before any worker said)."""

    total: int | None
    built: frozenset[int]

    @property
    def complete(self) -> bool:
        return self.total is not None and self.built >= frozenset(range(self.total))

    def describe(self) -> str:
        if self.complete:
            return "complete"
        if self.total is None:
            return "not rebuilt yet (Redis lost its data, or no worker has run)"
        done = len(self.built & frozenset(range(self.total)))
        return f"being rebuilt: {done} of {self.total} partitions written"


class ServingMarks:
    """The serving-layer methods of ``AvailabilityStore``."""

    client: RedisClient
    prefix: str

    def _init_serving_marks(self, client: RedisClient, prefix: str) -> None:
        self._mark_built: Any = client.register_script(_MARK_BUILT)
        self._void_epoch: Any = client.register_script(_VOID_EPOCH)
        self._serving_key = f"{prefix}:{SERVING_MARKS}"

    async def begin_rebuild(self, partitions: int) -> bytes:
        """The current rebuild epoch, starting one if Redis has none (in a cluster, also
        if a master lost its marker of the epoch: it lost its records too)."""
        for _ in range(3):
            pipe = self.client.pipeline(transaction=False)
            pipe.hsetnx(self._serving_key, "epoch", uuid.uuid4().hex)
            pipe.hset(self._serving_key, "partitions", partitions)
            pipe.hget(self._serving_key, "epoch")
            created, _, epoch = await pipe.execute()
            if not isinstance(self.client, RedisCluster):
                return cast(bytes, epoch)
            markers = await self._master_markers()
            if created:
                await self._set_markers(markers, epoch)
                return cast(bytes, epoch)
            if all(value == epoch for value in (await self._read_markers(markers)).values()):
                return cast(bytes, epoch)
            # A master lost its data: void the epoch (unless another worker did already).
            await self._void_epoch(keys=[self._serving_key], args=[epoch])
        raise RuntimeError("the serving epoch keeps changing; try again")

    async def _master_markers(self) -> list[bytes]:
        """One marker key per master of the cluster (in a slot that master owns)."""
        cluster = cast(RedisCluster, self.client)
        await cluster.initialize()
        owners = {node.name for node in cluster.get_primaries()}
        keys: dict[str, bytes] = {}
        n = 0
        while len(keys) < len(owners) and n < 100_000:
            key = f"{self.prefix}:{SERVING_MARKS}:{{m{n}}}".encode()
            owner = cluster.get_node_from_key(key.decode())
            if owner is not None and owner.name not in keys:
                keys[owner.name] = key
            n += 1
        return list(keys.values())

    async def _read_markers(self, keys: Sequence[bytes]) -> dict[bytes, bytes | None]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        return dict(zip(keys, await pipe.execute(), strict=True))

    async def _set_markers(self, keys: Sequence[bytes], epoch: bytes) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.set(key, epoch)
        await pipe.execute()

    async def mark_built(self, epoch: bytes, partitions: Iterable[int]) -> bool:
        """Note that every record of ``partitions`` is written; False (nothing noted) if
        the epoch is no longer current: Redis lost its data meanwhile."""
        fields = [b"p:%d" % partition for partition in partitions]
        done = await self._mark_built(keys=[self._serving_key], args=[epoch, *fields])
        return bool(done)

    async def serving_layer(self) -> ServingLayer:
        raw = cast(dict[bytes, bytes], await self.client.hgetall(self._serving_key))
        epoch = raw.get(b"epoch")
        total = raw.get(b"partitions")
        if epoch is not None and isinstance(self.client, RedisCluster):
            markers = await self._read_markers(await self._master_markers())
            if any(value != epoch for value in markers.values()):
                # A master lost its share of the records: nothing counts as built
                # until a worker starts a new epoch (``begin_rebuild``).
                return ServingLayer(int(total) if total is not None else None, frozenset())
        built = frozenset(
            int(name[2:])
            for name, value in raw.items()
            if name.startswith(b"p:") and value == epoch and name[2:].isdigit()
        )
        return ServingLayer(int(total) if total is not None else None, built)

    async def incomplete_serving_layer(self) -> str | None:
        """None if the serving layer is complete, else what it lacks. A read that
        finds no record asks this (so that a SKU not yet rebuilt is not answered as
        unknown). Asked afresh every time: an answer remembered even for a second would
        let the reads just after Redis lost its data call every SKU unknown, and an
        unknown SKU is rare enough on a storefront that its second round trip is cheap."""
        layer = await self.serving_layer()
        if layer.complete:
            return None
        return f"the serving layer is {layer.describe()}; retry shortly"

    async def forget_built(self) -> None:
        """Have every worker rewrite its serving records (as if Redis had lost them)."""
        await self.client.delete(self._serving_key)
