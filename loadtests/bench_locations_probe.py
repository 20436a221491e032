"""What ``loadtests.bench_locations`` reads around a run of sales: a snapshot of the
worker's CPU time, the Redis server's traffic and the worker's own counts
(``Snapshot``), the change feed's records since a moment (``feed_bytes_since``), and
a load process that subscribes to the SKUs' change channels as a Watch server does
and counts what arrives (``run_channel_meter``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import redis
import redis.asyncio as aioredis

from infra.config import Settings
from infra.kafka import read_topic
from infra.store import AvailabilityStore
from loadtests.bench_cli import BenchError
from loadtests.bench_grpc_loads import subscribe_confirmed
from loadtests.bench_measure import process_cpu_seconds
from loadtests.bench_processes import Message, receive
from loadtests.bench_stack import folded_count, worker_statuses
from loadtests.workload import sku_name


@dataclass(frozen=True)
class Snapshot:
    """Cumulative figures at one moment; ``minus`` gives those of an interval."""

    at: float  # time.monotonic()
    worker_cpu_seconds: float
    redis_input_bytes: int  # what clients sent the Redis server
    redis_output_bytes: int  # what it sent them: replies and pub/sub messages
    folded: int  # events the worker folded (or sent to the dead-letter topic)
    batches: int  # fold batches
    serving_writes: int  # serving records the worker wrote
    feed_published: int  # records the worker put on the change feed

    def minus(self, before: Snapshot) -> dict[str, float]:
        return {
            "seconds": self.at - before.at,
            "worker_cpu_seconds": self.worker_cpu_seconds - before.worker_cpu_seconds,
            "redis_input_bytes": self.redis_input_bytes - before.redis_input_bytes,
            "redis_output_bytes": self.redis_output_bytes - before.redis_output_bytes,
            "folded": self.folded - before.folded,
            "batches": self.batches - before.batches,
            "serving_writes": self.serving_writes - before.serving_writes,
            "feed_published": self.feed_published - before.feed_published,
        }


def worker_status(settings: Settings) -> dict[str, Any]:
    """The one worker's last status report (``streams.worker_status``)."""
    statuses = worker_statuses(settings)
    if len(statuses) != 1:
        raise BenchError(f"expected one worker's status in Redis, found {len(statuses)}")
    return statuses[0]


def snapshot(client: redis.Redis, settings: Settings, worker_pid: int) -> Snapshot:
    """Read the worker's figures first and the Redis traffic last: the reads of this
    snapshot count in the interval before the next one, the same few hundred bytes
    every time."""
    status = worker_status(settings)
    counters: dict[bytes, bytes] = client.hgetall(f"{settings.redis_key_prefix}:counters")  # type: ignore[assignment]
    cpu = process_cpu_seconds(worker_pid)
    stats: Mapping[str, Any] = client.info("stats")
    return Snapshot(
        at=time.monotonic(),
        worker_cpu_seconds=cpu,
        redis_input_bytes=int(stats["total_net_input_bytes"]),
        redis_output_bytes=int(stats["total_net_output_bytes"]),
        folded=sum(
            int(value)
            for name, value in counters.items()
            if name.startswith((b"folded:", b"dead_letters:"))
        ),
        batches=int(counters.get(b"batches", 0)),
        serving_writes=int(status["serving_writes"]),
        feed_published=int(status["feed_published"]),
    )


def wait_settled(
    client: redis.Redis,
    settings: Settings,
    events: int,
    alive: Any,
    timeout: float,
    poll: float = 0.2,
) -> None:
    """Until the worker has folded ``events`` in all and a status report written after
    that shows nothing left to write or publish (reports come once a heartbeat)."""
    deadline = time.monotonic() + timeout
    folded_at: float | None = None
    while True:
        alive()
        now = time.time()
        if folded_at is None and folded_count(client, settings) >= events:
            folded_at = now
        if folded_at is not None:
            status = worker_status(settings)
            if (
                float(status["ts"]) > folded_at
                and status["pending_writes"] == 0
                and status["feed_pending"] == 0
            ):
                return
        if time.monotonic() > deadline:
            raise BenchError(
                f"the worker did not fold and publish {events} events within {timeout:.0f} s"
            )
        time.sleep(poll)


def feed_bytes_since(settings: Settings, since: float) -> tuple[int, int]:
    """(records, bytes of key and value) on the change feed written at or after
    ``since`` (``time.time()``, compared with the records' timestamps)."""
    since_ms = int(since * 1000)
    records = asyncio.run(read_topic(settings, settings.changes_topic))
    chosen = [r for r in records if r.timestamp >= since_ms]
    size = sum(len(r.value or b"") + len(r.key or b"") for r in chosen)
    return len(chosen), size


@dataclass(frozen=True)
class ChannelJob:
    redis_url: str
    key_prefix: str
    skus: int


@dataclass
class ChannelCount:
    messages: int = 0
    bytes: int = 0  # the messages' payloads (``<version> <record>``)


async def run_channel_meter(job: ChannelJob, conn: Connection[Message, Message]) -> None:
    """Subscribes to every SKU's change channel, as a Watch server does for the SKUs
    its watches want, and counts the messages and their bytes until told to stop."""
    client = aioredis.Redis.from_url(job.redis_url)
    store = AvailabilityStore(client, job.key_prefix)  # knows the channel names
    channels = [store.change_channel(sku_name(i)) for i in range(job.skus)]
    pubsub = client.pubsub()
    counted = ChannelCount()
    try:
        await subscribe_confirmed(pubsub, channels)
        conn.send(("ready", None))
        stop = asyncio.create_task(receive(conn, "stop"))
        while not stop.done():
            message = await pubsub.get_message(timeout=0.2)
            if message is not None and message["type"] == "smessage":
                counted.messages += 1
                counted.bytes += len(message["data"])
        await stop
    finally:
        with contextlib.suppress(Exception):
            await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()
    conn.send(("result", counted))
