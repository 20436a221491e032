"""``infra.redis_batch`` against a real Redis and a real Redis Cluster: commands of
every kind in one batch, each with its own reply or error; scripts the server does
not know are loaded and sent again with the reads after them, a write never twice."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.exceptions import ResponseError

from dev.redis_cluster import DevRedisCluster
from infra.redis_batch import RedisBatch
from infra.redis_client import RedisClient, connect
from infra.store import AvailabilityStore

ADD = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


@pytest.fixture(params=["single", "cluster"])
async def client(
    request: pytest.FixtureRequest, store: AvailabilityStore
) -> AsyncIterator[tuple[RedisClient, str]]:
    if request.param == "single":
        yield store.client, store.prefix
        return
    cluster: DevRedisCluster = request.getfixturevalue("redis_cluster")
    client = connect(cluster.url, cluster=True)
    try:
        yield client, store.prefix
    finally:
        keys = [k async for k in client.scan_iter(match=f"{store.prefix}:*", count=1000)]
        for key in keys:
            await client.delete(key)
        await client.aclose()


async def test_one_batch_of_scripts_writes_reads_and_an_error(
    client: tuple[RedisClient, str],
) -> None:
    redis, prefix = client
    add = redis.register_script(ADD)
    keys = [f"{prefix}:batch:{{{n}}}" for n in range(12)]  # slots on every master
    a_hash = f"{prefix}:batch:{{hash}}"
    await redis.hset(a_hash, "f", "1")
    await redis.script_flush()  # the server knows no script: every EVALSHA fails first

    batch = RedisBatch(redis)
    writes = [batch.script(add, [key], [n + 1]) for n, key in enumerate(keys)]
    reads = [batch.command("GET", key, read=True, decode=int) for key in keys]
    wrong = batch.command("GET", a_hash, read=True)
    after = batch.command("INCRBY", keys[0], 100)
    assert len(batch) == 26
    await batch.run()

    # The scripts ran once each (after a load), and the reads after them see them.
    assert [w.value() for w in writes] == [101, *range(2, 13)]
    assert [r.value() for r in reads] == [101, *range(2, 13)]
    # The plain write ran in the first round trip only, before the scripts did.
    assert after.value() == 100
    assert int(await redis.get(keys[0])) == 101
    # One command's error is its own.
    assert isinstance(wrong.error, ResponseError) and "WRONGTYPE" in str(wrong.error)
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        wrong.value()
    assert writes[1].error is None

    # Known now: one round trip, the same scripts.
    again = RedisBatch(redis)
    more = [again.script(add, [key], [1]) for key in keys]
    await again.run()
    assert [m.value() for m in more] == [102, *range(3, 14)]


async def test_a_reply_is_there_only_once_the_batch_ran(client: tuple[RedisClient, str]) -> None:
    redis, prefix = client
    batch = RedisBatch(redis)
    pending = batch.command("GET", f"{prefix}:batch:{{none}}", read=True)
    with pytest.raises(RuntimeError, match="has not run"):
        pending.value()
    await batch.run()
    assert pending.value() is None
    await RedisBatch(redis).run()  # an empty batch sends nothing
