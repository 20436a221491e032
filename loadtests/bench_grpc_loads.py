"""The gRPC benchmark's load processes: what each does (``run_get_client``,
``run_watcher``, ``run_redis_tap``, ``run_producer``), the job it is given and the
result it sends back (see ``loadtests.bench_processes``)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import random
import time
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any, Final

import grpc
import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from infra.config import Settings
from infra.kafka import kafka_client_options
from infra.records import decode_change
from infra.store import AvailabilityStore
from loadtests.bench_cli import BenchError
from loadtests.bench_grpc_catalogue import CHANNEL, INITIAL_ON_HAND
from loadtests.bench_processes import Message, receive, start_of
from loadtests.credentials import grpc_metadata
from loadtests.workload import location_name, sku_name
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from services.grpc.gen.availability.v1 import availability_pb2_grpc as pb_grpc

GET_TIMEOUT: Final[float] = 5.0


def watch_slices(skus: int, watches: int) -> list[list[str]]:
    """Distinct, together complete SKU lists, one per watch (round robin)."""
    names = [sku_name(i) for i in range(skus)]
    return [names[w::watches] for w in range(watches)]


def rfc3339_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class GetJob:
    target: str
    token: str
    skus: int
    rate: float
    callers: int
    duration: float
    seed: int


@dataclass(frozen=True)
class WatchJob:
    target: str
    token: str
    skus: int
    locations: int
    watches: int
    open_timeout: float


@dataclass(frozen=True)
class TapJob:
    redis_url: str
    key_prefix: str
    skus: int
    locations: int


@dataclass(frozen=True)
class ProduceJob:
    settings: Settings  # the broker and how to connect (kafka_client_options)
    topic: str
    skus: int
    locations: int
    rate: float
    duration: float
    run_id: str
    max_batch_bytes: int
    linger_ms: int = 0


@dataclass
class GetResult:
    latencies: array[float]  # seconds, one per successful call
    errors: dict[str, int]
    first_sent: float  # perf_counter
    last_done: float
    max_behind_schedule: float  # seconds a call started after its scheduled time, at most
    cpu_seconds: float


@dataclass
class OnHandLog:
    """Every change of a (SKU, location)'s on_hand as one receiver saw it, in arrival
    order. Arrays, not lists of tuples: the garbage collector does not walk them."""

    times: array[float] = field(default_factory=lambda: array("d"))  # time.time()
    slots: array[int] = field(default_factory=lambda: array("q"))  # sku * locations + loc
    on_hands: array[int] = field(default_factory=lambda: array("q"))
    messages: int = 0  # change messages (not initial figures)
    cpu_seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class ProduceResult:
    publish_times: array[float]  # time.time() just before send, per event
    ack_times: array[float]  # time.time() when the broker acknowledged it; NaN if not
    slots: array[int]
    expected_on_hands: array[int]
    errors: int
    max_behind_schedule: float
    cpu_seconds: float


async def run_get_client(job: GetJob, conn: Connection[Message, Message]) -> None:
    """GetAvailability at a fixed rate: ``callers`` tasks, each on its own schedule of
    ``rate / callers`` calls/s, a random SKU per call; latency per call."""
    rng = random.Random(job.seed)
    requests = [
        pb.GetAvailabilityRequest(sku=sku_name(i), channel=CHANNEL) for i in range(job.skus)
    ]
    async with grpc.aio.insecure_channel(job.target) as channel:
        stub = pb_grpc.AvailabilityServiceStub(channel)
        metadata = grpc_metadata(job.token)
        for _ in range(50):  # connect, and warm both ends up
            await stub.GetAvailability(
                requests[rng.randrange(job.skus)], timeout=GET_TIMEOUT, metadata=metadata
            )
        # What exists now lives until the end: keep collections short (shared notes
        # "read-path": a full collection takes ~22 ms).
        gc.collect()
        gc.freeze()
        conn.send(("ready", None))
        start = start_of(await receive(conn, "go"))
        end = start + job.duration
        interval = job.callers / job.rate
        latencies: array[float] = array("d")
        errors: Counter[str] = Counter()
        behind = [0.0]
        first_sent = [math.inf]
        last_done = [0.0]
        cpu_before = time.process_time()

        async def caller(index: int) -> None:
            due = start + index / job.rate
            while due < end:
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                request = requests[rng.randrange(job.skus)]
                sent = time.perf_counter()
                behind[0] = max(behind[0], sent - due)
                first_sent[0] = min(first_sent[0], sent)
                try:
                    await stub.GetAvailability(request, timeout=GET_TIMEOUT, metadata=metadata)
                except grpc.aio.AioRpcError as exc:
                    errors[exc.code().name] += 1
                else:
                    done = time.perf_counter()
                    latencies.append(done - sent)
                    last_done[0] = max(last_done[0], done)
                due += interval

        await asyncio.gather(*(caller(i) for i in range(job.callers)))
        result = GetResult(
            latencies=latencies,
            errors=dict(errors),
            first_sent=first_sent[0],
            last_done=last_done[0],
            max_behind_schedule=behind[0],
            cpu_seconds=time.process_time() - cpu_before,
        )
    conn.send(("result", result))


class OnHandRecorder:
    """Keeps an ``OnHandLog`` of the changes of each (SKU, location)'s on_hand."""

    def __init__(self, skus: int, locations: int) -> None:
        self.locations = locations
        self.sku_index = {sku_name(i): i for i in range(skus)}
        self.location_index = {location_name(j): j for j in range(locations)}
        self.last = array("q", [INITIAL_ON_HAND]) * (skus * locations)
        self.log = OnHandLog()

    def observe(self, now: float, sku: str, figures: Iterable[tuple[str, int]]) -> None:
        base = self.sku_index[sku] * self.locations
        log_ = self.log
        for location_id, on_hand in figures:
            slot = base + self.location_index[location_id]
            if on_hand != self.last[slot]:
                self.last[slot] = on_hand
                log_.times.append(now)
                log_.slots.append(slot)
                log_.on_hands.append(on_hand)


async def run_watcher(job: WatchJob, conn: Connection[Message, Message]) -> None:
    """Opens the watches, each read by its own task, and records every change.

    A watch refused or ended with an error is opened again after a short pause, as a
    client would do: the figures of its new initial messages count as received then.
    """
    recorder = OnHandRecorder(job.skus, job.locations)
    slices = watch_slices(job.skus, job.watches)
    calls: list[Any] = [None] * len(slices)
    opened = [0]  # watches whose first initial figures are all in
    all_open = asyncio.Event()
    stopping = [False]
    open_errors: Counter[str] = Counter()  # refused (or ended) before all were open
    stream_errors: Counter[str] = Counter()  # ended after that
    jitter = random.Random(job.watches)

    async def keep_watching(index: int, skus: list[str]) -> None:
        request = pb.WatchAvailabilityRequest(skus=skus, channel=CHANNEL)
        first_open = True
        while not stopping[0]:
            call = calls[index] = stub.WatchAvailability(request, metadata=grpc_metadata(job.token))
            initial = 0
            try:
                # Read in this task only: cancelling a pending read cancels the call.
                async for message in call:
                    now = time.time()
                    if message.initial:
                        initial += 1
                        if first_open and initial == len(skus):
                            first_open = False
                            opened[0] += 1
                            if opened[0] == len(slices):
                                all_open.set()
                    else:
                        recorder.log.messages += 1
                    availability = message.availability
                    recorder.observe(
                        now,
                        availability.sku,
                        ((loc.location_id, loc.on_hand) for loc in availability.locations),
                    )
                reason = "OK (ended)"
            except grpc.aio.AioRpcError as exc:
                reason = f"{exc.code().name}: {exc.details()}"
            except asyncio.CancelledError:
                if stopping[0]:
                    return
                raise
            if stopping[0]:
                return
            (open_errors if not all_open.is_set() else stream_errors)[reason] += 1
            await asyncio.sleep(jitter.uniform(0.05, 0.25))

    async with grpc.aio.insecure_channel(job.target) as channel:
        stub = pb_grpc.AvailabilityServiceStub(channel)
        started = time.perf_counter()
        tasks = [asyncio.create_task(keep_watching(i, skus)) for i, skus in enumerate(slices)]
        try:
            await asyncio.wait_for(all_open.wait(), job.open_timeout)
        except TimeoutError:
            raise BenchError(
                f"{opened[0]} of {len(slices)} watches open within {job.open_timeout:.0f} s;"
                f" errors: {dict(open_errors)}"
            ) from None
        open_seconds = time.perf_counter() - started
        gc.collect()
        gc.freeze()
        conn.send(("ready", {"open_seconds": open_seconds, "open_errors": dict(open_errors)}))
        cpu_before = time.process_time()
        await receive(conn, "stop")
        recorder.log.cpu_seconds = time.process_time() - cpu_before
        stopping[0] = True
        for call in calls:
            call.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    recorder.log.errors = dict(stream_errors)
    conn.send(("result", recorder.log))


async def run_redis_tap(job: TapJob, conn: Connection[Message, Message]) -> None:
    """Subscribes to the SKUs' change channels, as the gRPC server does, and records
    when each change was announced in Redis."""
    recorder = OnHandRecorder(job.skus, job.locations)
    client = aioredis.Redis.from_url(job.redis_url)
    store = AvailabilityStore(client, job.key_prefix)  # knows the channel names
    sku_of = {store.change_channel(sku_name(i)): sku_name(i) for i in range(job.skus)}
    pubsub = client.pubsub()
    try:
        await subscribe_confirmed(pubsub, list(sku_of))
        gc.collect()
        gc.freeze()
        conn.send(("ready", None))
        stop = asyncio.create_task(receive(conn, "stop"))
        cpu_before = time.process_time()
        while not stop.done():
            message = await pubsub.get_message(timeout=0.2)
            if message is None or message["type"] != "smessage":
                continue
            now = time.time()
            recorder.log.messages += 1
            change = decode_change(message["data"])
            recorder.observe(
                now,
                sku_of[message["channel"]],
                ((loc.location_id, loc.on_hand) for loc in change.changed),
            )
        await stop
        recorder.log.cpu_seconds = time.process_time() - cpu_before
    finally:
        with contextlib.suppress(Exception):
            await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()
    conn.send(("result", recorder.log))


async def run_producer(job: ProduceJob, conn: Connection[Message, Message]) -> None:
    """Publishes ``pos.sale`` events on a fixed schedule (event n at start + n / rate)."""
    total = round(job.rate * job.duration)
    publish_times = array("d", [math.nan]) * total
    ack_times = array("d", [math.nan]) * total
    slots = array("q", [0]) * total
    expected = array("q", [0]) * total
    sales_per_slot = [0] * (job.skus * job.locations)
    skus = [sku_name(i) for i in range(job.skus)]
    keys = [sku.encode() for sku in skus]
    locations = [location_name(j) for j in range(job.locations)]
    failures = [0]

    def acknowledged(index: int, sent: asyncio.Future[Any]) -> None:
        if sent.cancelled() or sent.exception() is not None:
            failures[0] += 1
        else:
            ack_times[index] = time.time()

    producer = AIOKafkaProducer(
        **kafka_client_options(job.settings),
        acks=1,
        linger_ms=job.linger_ms,
        max_batch_size=job.max_batch_bytes,
        client_id="bench-producer",
    )
    await producer.start()
    try:
        await producer.partitions_for(job.topic)  # metadata now, not on the first send
        gc.collect()
        gc.freeze()
        conn.send(("ready", None))
        start = start_of(await receive(conn, "go"))
        cpu_before = time.process_time()
        deliveries: list[asyncio.Future[Any]] = []
        behind = 0.0
        sent = 0
        while sent < total:
            due = min(total, int((time.perf_counter() - start) * job.rate) + 1)
            if due <= sent:
                await asyncio.sleep(start + sent / job.rate - time.perf_counter())
                continue
            behind = max(behind, time.perf_counter() - (start + sent / job.rate))
            while sent < due:
                sku_i = sent % job.skus
                location_j = (sent // job.skus) % job.locations
                slot = sku_i * job.locations + location_j
                sales_per_slot[slot] += 1
                value = orjson.dumps(
                    {
                        "type": "pos.sale",
                        "event_id": f"{job.run_id}-sale-{sent}",
                        "sku": skus[sku_i],
                        "location_id": locations[location_j],
                        "quantity": 1,
                        "occurred_at": rfc3339_now(),
                    }
                )
                slots[sent] = slot
                expected[sent] = INITIAL_ON_HAND - sales_per_slot[slot]
                publish_times[sent] = time.time()
                delivery = await producer.send(job.topic, value, key=keys[sku_i])
                delivery.add_done_callback(lambda fut, index=sent: acknowledged(index, fut))
                deliveries.append(delivery)
                sent += 1
        await producer.flush()
        await asyncio.gather(*deliveries, return_exceptions=True)
        cpu_seconds = time.process_time() - cpu_before
    finally:
        await producer.stop()
    conn.send(
        (
            "result",
            ProduceResult(
                publish_times=publish_times,
                ack_times=ack_times,
                slots=slots,
                expected_on_hands=expected,
                errors=failures[0],
                max_behind_schedule=behind,
                cpu_seconds=cpu_seconds,
            ),
        )
    )


async def subscribe_confirmed(pubsub: Any, channels: Sequence[bytes]) -> None:
    """Subscribe ``pubsub`` to the sharded ``channels`` and return once Redis has
    confirmed every subscription (``BenchError`` when it stops confirming)."""
    await pubsub.ssubscribe(*channels)
    confirmed = 0
    while confirmed < len(channels):
        message = await pubsub.get_message(timeout=10.0)
        if message is None:
            raise BenchError(f"Redis confirmed {confirmed} of {len(channels)} subscriptions")
        if message["type"] == "ssubscribe":
            confirmed += 1
