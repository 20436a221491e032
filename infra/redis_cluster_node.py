"""The connection pool of one Redis Cluster node, as every cluster client here uses it
(``infra.redis_client.connect``): redis-py's ``ClusterNode`` with two changes.

**Last in, first out.** redis-py's node hands out its idle connections first in,
first out, and follows an ``ASK`` redirection by sending ``ASKING`` on one pooled
connection and the command on the next one taken: with two or more idle connections
to the importing master, the command goes out on another connection than its
``ASKING``, is answered ``MOVED`` back to the migrating master, which answers ``ASK``
again, until the client gives up ("TTL exhausted"), for as long as the slot migrates.
Taken last in, first out, the command gets the connection its ``ASKING`` was just
released to (nothing runs between the two on the event loop), and idle connections
beyond what a burst needs are the ones that stay idle.

**A burst waits for a connection.** redis-py's node makes at most
``max_connections`` connections and fails a call beyond them at once
(``MaxConnectionsError``; redis-py 8 offers no way to wait, and its cluster pipeline
answers that error by closing every connection of the client). Here a call that
finds none idle and no room for another waits, up to ``POOL_TIMEOUT`` seconds as a
single Redis's blocking pool does, until one is released: the commands and
pipelines redis-py sends, and the packed batches of ``infra.redis_raw``. The wait
ends with the connection in hand: nothing runs on the event loop between the check
and the taking.

redis-py builds its nodes by the name ``ClusterNode`` of ``redis.asyncio.cluster``
(when it discovers the cluster, and on redirections), so ``install()`` puts this
class under that name; redis-py's own code is otherwise untouched.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import redis.asyncio.cluster as redis_cluster
from redis.asyncio.connection import Connection
from redis.exceptions import MaxConnectionsError

#: Seconds a call waits for a free connection to a node (as the single Redis's pool).
POOL_TIMEOUT = 5.0

#: While waiting, the pool is looked at again this often even unwoken (a connection
#: released by a background disconnect wakes no one).
_RECHECK = 0.1

_RedisClusterNode = redis_cluster.ClusterNode


class ClusterNode(_RedisClusterNode):
    """redis-py's cluster node, its idle connections taken last in, first out, and a
    call beyond ``max_connections`` waiting for one."""

    __slots__ = ("_waiters",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiters: deque[asyncio.Future[None]] = deque()

    def has_room(self) -> bool:
        """Whether ``acquire_connection`` would give a connection now."""
        return bool(self._free) or len(self._connections) < self.max_connections

    async def wait_for_room(self, timeout: float = POOL_TIMEOUT) -> None:
        """Return once ``acquire_connection`` will give a connection (at once, when it
        would now); ``MaxConnectionsError`` after ``timeout`` seconds."""
        if self.has_room():
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.has_room():
            if loop.time() >= deadline:
                raise MaxConnectionsError(
                    f"no connection to {self.name} free within {timeout:g} s"
                    f" ({self.max_connections} in use)"
                )
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(min(deadline, loop.time() + _RECHECK)):
                    await waiter
            except TimeoutError:
                pass
            finally:
                if not waiter.done():
                    waiter.cancel()

    def acquire_connection(self) -> Connection:
        try:
            return self._free.pop()
        except IndexError:
            return super().acquire_connection()  # a new one, if the node has room

    def release(self, connection: Connection) -> None:
        super().release(connection)
        while self._waiters:  # wake the longest waiting caller still waiting
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    async def execute_command(self, *args: Any, asking: bool = False, **kwargs: Any) -> Any:
        await self.wait_for_room()
        return await super().execute_command(*args, asking=asking, **kwargs)

    async def execute_pipeline(self, commands: list[redis_cluster.PipelineCommand]) -> bool:
        await self.wait_for_room()
        return await super().execute_pipeline(commands)


async def acquire(node: _RedisClusterNode) -> Connection:
    """A connection of ``node``'s pool, waiting for one as its calls do (to be given
    back with ``node.release``)."""
    if isinstance(node, ClusterNode):
        await node.wait_for_room()
    return node.acquire_connection()


def install() -> None:
    """Make redis-py build every cluster node as ``ClusterNode`` (idempotent)."""
    redis_cluster.ClusterNode = ClusterNode  # type: ignore[misc]
