"""Commands sent packed in RESP and their replies read under one timeout: the stream
processor's serving writes and the change feed's marks (``AvailabilityStore``).

redis-py's pipelines spend more CPU per command (packing, a timeout per reply; in a
cluster, a command object and a slot lookup each) than the rest of the write, so the
hot batches are packed here. In a Redis Cluster each call goes to the master that
owns the slot of its first key (every call's keys share one slot: hash tags), one
round trip per master, concurrently. Anything that says the slot map is stale
(MOVED, ASK, TRYAGAIN, CLUSTERDOWN, a lost connection) is the caller's cue to run
the batch again through redis-py's cluster pipeline, which follows redirections and
refreshes the map (BENCHMARKS.md "Redis Cluster" has the figures behind this).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from infra import redis_cluster_node

#: Error replies that mean "ask the cluster again" rather than "this call failed".
TOPOLOGY_REPLIES = (AskError, TryAgainError, ClusterDownError)  # MovedError is an AskError


def pack_command(args: Sequence[bytes]) -> bytes:
    """A command in RESP, as Redis reads it."""
    return b"*%d\r\n" % len(args) + b"".join([b"$%d\r\n%b\r\n" % (len(a), a) for a in args])


async def exchange(connection: Connection, payload: bytes, replies: int) -> list[Any]:
    """Send ``payload`` and read ``replies`` replies (an error reply is returned, not
    raised) within the connection's socket timeout; on any failure the connection is
    closed (a reply may still be on its way)."""
    timeout: float | None = connection.socket_timeout
    try:
        await connection.send_packed_command(payload)
        answers: list[Any] = []
        try:
            async with asyncio.timeout(timeout):
                for _ in range(replies):
                    try:
                        answers.append(await connection.read_response(timeout=math.inf))
                    except ResponseError as exc:
                        answers.append(exc)
        except TimeoutError as exc:
            raise RedisTimeoutError(f"no reply from Redis within {timeout} s") from exc
        return answers
    except BaseException:
        await connection.disconnect()
        raise


async def round_trip(client: aioredis.Redis, payload: bytes, replies: int) -> list[Any]:
    """``exchange`` on a connection of a single Redis's pool."""
    pool = client.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        return await exchange(connection, payload, replies)
    finally:
        await pool.release(connection)


async def calls_per_master(
    cluster: RedisCluster, prefix: Sequence[bytes], calls: Sequence[Sequence[bytes]]
) -> list[Any]:
    """``prefix + call`` for each call, sent to the master owning the slot of
    ``call[0]`` (its first key); replies in call order. Raises what a connection
    raises; error replies (``TOPOLOGY_REPLIES`` among them) are returned."""
    await cluster.initialize()  # the slot map, once (a no-op after)
    groups: dict[str, tuple[ClusterNode, list[int]]] = {}
    for index, call in enumerate(calls):
        node = cluster.nodes_manager.get_node_from_slot(key_slot(call[0]))
        groups.setdefault(node.name, (node, []))[1].append(index)
    answers: list[Any] = [None] * len(calls)

    async def send(node: ClusterNode, indices: list[int]) -> None:
        payload = b"".join([pack_command((*prefix, *calls[i])) for i in indices])
        connection = await redis_cluster_node.acquire(node)
        try:
            replies = await exchange(connection, payload, len(indices))
        finally:
            node.release(connection)
        for index, reply in zip(indices, replies, strict=True):
            answers[index] = reply

    await asyncio.gather(*(send(node, indices) for node, indices in groups.values()))
    return answers
