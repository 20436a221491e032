"""The connection pool of one Redis Cluster node, as every cluster client here uses it
(``infra.redis_client.connect``): redis-py's ``ClusterNode`` with one change.

**Last in, first out.** redis-py's node hands out its idle connections first in,
first out, and follows an ``ASK`` redirection by sending ``ASKING`` on one pooled
connection and the command on the next one taken: with two or more idle connections
to the importing master, the command goes out on another connection than its
``ASKING``, is answered ``MOVED`` back to the migrating master, which answers ``ASK``
again, until the client gives up ("TTL exhausted"), for as long as the slot migrates.
Taken last in, first out, the command gets the connection its ``ASKING`` was just
released to (nothing runs between the two on the event loop), and idle connections
beyond what a burst needs are the ones that stay idle.

redis-py builds its nodes by the name ``ClusterNode`` of ``redis.asyncio.cluster``
(when it discovers the cluster, and on redirections), so ``install()`` puts this
class under that name; redis-py's own code is otherwise untouched.
"""

from __future__ import annotations

import redis.asyncio.cluster as redis_cluster
from redis.asyncio.connection import Connection

_RedisClusterNode = redis_cluster.ClusterNode


class ClusterNode(_RedisClusterNode):
    """redis-py's cluster node, its idle connections taken last in, first out."""

    __slots__ = ()

    def acquire_connection(self) -> Connection:
        try:
            return self._free.pop()
        except IndexError:
            return super().acquire_connection()  # a new one, if the node has room


def install() -> None:
    """Make redis-py build every cluster node as ``ClusterNode`` (idempotent)."""
    redis_cluster.ClusterNode = ClusterNode  # type: ignore[misc]
