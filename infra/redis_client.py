"""The one place Redis clients are made: a single Redis, or a Redis Cluster.

Every process (the stream processor, both APIs, the CLI) builds its clients here,
from ``Settings.redis_url`` and ``Settings.redis_cluster`` (README "Redis Cluster"):

- a single Redis: ``redis.asyncio.Redis`` over a blocking pool (a burst beyond
  ``max_connections`` waits up to 5 s for a free connection instead of failing);
- a cluster: ``redis.asyncio.cluster.RedisCluster``; the URL names one node (any),
  the others and the slot map are discovered from it, and ``MOVED``/``ASK``
  redirections and failed-over masters are followed by redis-py (its node pools as
  ``infra.redis_cluster_node`` makes them: an ``ASK`` is followed, and a burst beyond
  ``max_connections`` per master waits up to 5 s as on a single Redis).

Both get timeouts, so an unreachable Redis fails a call instead of hanging it; the
URL's own ``socket_timeout=...`` parameters take precedence.
"""

from __future__ import annotations

from typing import TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterError, RedisClusterException, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from infra import redis_cluster_node

#: A client of either kind; ``AvailabilityStore`` and its users accept both.
RedisClient: TypeAlias = aioredis.Redis | RedisCluster

#: The store cannot be reached (an API answers "unavailable"): a single Redis's
#: connection errors and timeouts; in a cluster also a cluster that is down (a master
#: away, CLUSTERDOWN) or whose slots are not all covered (``RedisClusterException``
#: is no ``RedisError``).
STORE_DOWN: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterError,
    RedisClusterException,
)

#: Any failure of a Redis call, for loops that retry whatever went wrong.
REDIS_FAILURES: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)

SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0


def connect(url: str, *, cluster: bool = False, max_connections: int = 200) -> RedisClient:
    """A client of the Redis (``cluster``: of the Redis Cluster) at ``url``; bytes replies."""
    if cluster:
        redis_cluster_node.install()
        return RedisCluster.from_url(
            url,
            decode_responses=False,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            # Per node; a call beyond waits up to POOL_TIMEOUT for a free one
            # (infra.redis_cluster_node).
            max_connections=max_connections,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        decode_responses=False,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        max_connections=max_connections,
        timeout=redis_cluster_node.POOL_TIMEOUT,
    )
    return aioredis.Redis.from_pool(pool)
