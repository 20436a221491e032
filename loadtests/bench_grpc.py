"""Benchmark of the gRPC API: watch delivery latency and GetAvailability latency.

``python -m loadtests.bench_grpc [--quick] [options]`` (``make bench-grpc``) starts a
whole stack of its own on this machine: a development broker (Tansu) on a free port,
Redis (the one answering at ``--redis-url``, started if none does), one stream worker
(``python -m streams``) and one gRPC server (``python -m services.grpc``), with a
unique topic and key prefix. Then:

1. seeds a catalogue (``--skus`` x ``--locations`` ERP balances of 1,000,000 units)
   and waits until every SKU is served;
2. phase (a): GetAvailability at ``--get-rate`` requests/s from ``--get-callers``
   concurrent callers, random SKU, no watches open, no events flowing;
3. opens ``--watches`` WatchAvailability streams over distinct slices of the
   catalogue (together: every SKU);
4. phase (b): publishes ``pos.sale`` events (quantity 1, round robin over the SKU and
   location pairs) at ``--rate`` events/s for ``--duration`` s while the watches record
   every change they receive and GetAvailability runs as in (a);
5. phase (c), after the watches are closed: publishes ``--catch-up`` sales at once and
   times the worker until it has folded them: its fold capacity with large batches.

Each load generator is a process of its own (``multiprocessing``, spawn), so that its
event loop does not queue behind another's. Latency of an event: from the wall clock
just before the producer hands it to the Kafka client, to the first moment a watch
client received figures of that SKU and location with ``on_hand`` at or below the
value the event leads to (``1,000,000 - k`` for the k-th sale of the pair). Figures
only go down, and a pair's sales sit in one partition in order, so that moment is
the one the event became visible. A "Redis tap" process subscribes to the same
change channels as the gRPC server (``--no-redis-tap`` to leave it out) and splits
the latency into the worker's part (publish -> change announced in Redis) and the
gRPC server's part (announced -> received by the watch client).

Writes a table to stdout and JSON to ``--output`` (default
``bench-results/grpc.json``); logs progress to stderr. Everything it started is
stopped on exit (also on Ctrl-C or failure), and its Redis keys are deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import ctypes
import gc
import json
import logging
import math
import multiprocessing
import os
import platform
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
import uuid
from array import array
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from pathlib import Path
from types import FrameType
from typing import IO, Any, Final

import grpc
import numpy as np
import orjson
import redis
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from grpc_health.v1 import health_pb2

from dev.broker import DevBroker
from dev.processes import DEV_OVERRIDES, ENV_PREFIX, popen_child, process_env
from dev.processes import stop_process as stop_child_process
from dev.redis_server import ensure_redis
from infra.config import Settings
from infra.kafka import kafka_client_options
from infra.store import AvailabilityStore
from infra.topics import create_topics
from loadtests.credentials import bench_credential, grpc_metadata
from loadtests.workload import location_name, sku_name
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from services.grpc.gen.availability.v1 import availability_pb2_grpc as pb_grpc

log = logging.getLogger("bench.grpc")

REPO_ROOT: Final[Path] = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT: Final[Path] = REPO_ROOT / "bench-results" / "grpc.json"
SERVICE_NAME: Final[str] = pb.DESCRIPTOR.services_by_name["AvailabilityService"].full_name

CHANNEL: Final[str] = "online"
INITIAL_ON_HAND: Final[int] = 1_000_000
# Every sale happens now, long after this: none is contained in the ERP figure.
ERP_AS_OF: Final[str] = "2026-01-01T00:00:00Z"
# The load producer batches and lingers 5 ms, as Kafka's producer does by default
# since 4.0: a request per event cost the development broker about 60% of a core at
# 1,000 events/s, on a machine of two. The linger counts in the latency measured.
# (The development broker reports wrong end offsets after batched produce, so the
# worker's lag figures are off by a batch; no figure here uses them.)
PRODUCER_MAX_BATCH_BYTES: Final[int] = 65536
PRODUCER_LINGER_MS: Final[int] = 5
# The worker batches as in production. The development stack makes it send one record
# per batch because this broker reports wrong end offsets after batched produce, which
# only matters when a table recovers from its changelog (shared notes
# "faust-on-tansu"); nothing restarts during a measurement. One-record batches cost
# the fold about 15% (``--worker-batch-bytes 1``).
WORKER_BATCH_BYTES: Final[int] = 16384
BATCH_GET_LIMIT: Final[int] = 500  # BatchGetAvailability's maximum
WATCH_SKU_LIMIT: Final[int] = 500  # WatchAvailability's maximum
WATCH_P99_TARGET_MS: Final[float] = 150.0
GET_P99_TARGET_MS: Final[float] = 3.0
COUNTER_FOLDED_SALES: Final[bytes] = b"folded:pos.sale"
COUNTER_FOLDED_BALANCES: Final[bytes] = b"folded:erp.balance"
# The worker adds its counters to Redis once a second; a change it folded reaches
# the watches well within this after its counter shows it.
DELIVERY_GRACE: Final[float] = 2.0
GET_TIMEOUT: Final[float] = 5.0

#: What flows over a pipe between the benchmark and a load process: (kind, payload).
Message = tuple[str, Any]


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message says which and why."""


# --------------------------------------------------------------------------- names


def watch_slices(skus: int, watches: int) -> list[list[str]]:
    """Distinct, together complete SKU lists, one per watch (round robin)."""
    names = [sku_name(i) for i in range(skus)]
    return [names[w::watches] for w in range(watches)]


def rfc3339_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------- jobs


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


# --------------------------------------------------------------------------- load processes


def _set_parent_death_signal() -> None:
    """Linux: the kernel sends SIGTERM to this process when the benchmark dies."""
    with contextlib.suppress(Exception):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def _load_process_main(
    name: str,
    role: Callable[[Any, Connection[Message, Message]], Coroutine[Any, Any, None]],
    job: Any,
    conn: Connection[Message, Message],
) -> None:
    """Entry point of a load process: runs ``role(job, conn)``; failures go to the pipe."""
    _set_parent_death_signal()
    # Ctrl-C reaches the whole foreground process group; the benchmark stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO, format=f"[bench {name} %(asctime)s] %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        asyncio.run(role(job, conn))
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc()))
        raise


async def _receive(conn: Connection[Message, Message], kind: str) -> Any:
    """The payload of the next message, which must be of ``kind`` (in a thread, so
    that the event loop goes on serving the gRPC calls meanwhile)."""
    got, payload = await asyncio.to_thread(conn.recv)
    if got != kind:
        raise BenchError(f"expected {kind!r} from the benchmark, got {got!r}")
    return payload


def _start_of(start_wall: float) -> float:
    """The perf_counter value of wall-clock time ``start_wall``."""
    return time.perf_counter() + (start_wall - time.time())


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
        start = _start_of(await _receive(conn, "go"))
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
        await _receive(conn, "stop")
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
        await pubsub.ssubscribe(*sku_of)
        confirmed = 0
        while confirmed < len(sku_of):
            message = await pubsub.get_message(timeout=10.0)
            if message is None:
                raise BenchError(f"Redis confirmed {confirmed} of {len(sku_of)} subscriptions")
            if message["type"] == "ssubscribe":
                confirmed += 1
        gc.collect()
        gc.freeze()
        conn.send(("ready", None))
        stop = asyncio.create_task(_receive(conn, "stop"))
        cpu_before = time.process_time()
        while not stop.done():
            message = await pubsub.get_message(timeout=0.2)
            if message is None or message["type"] != "smessage":
                continue
            now = time.time()
            recorder.log.messages += 1
            _, _, record = message["data"].partition(b" ")
            data = orjson.loads(record)
            recorder.observe(now, data["sku"], ((loc[0], loc[1]) for loc in data["locations"]))
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
        start = _start_of(await _receive(conn, "go"))
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


class LoadProcess:
    """A load process and the benchmark's end of its pipe."""

    def __init__(
        self,
        name: str,
        role: Callable[[Any, Connection[Message, Message]], Coroutine[Any, Any, None]],
        job: Any,
        alive: Callable[[], None],
    ) -> None:
        self.name = name
        self._alive = alive
        context = multiprocessing.get_context("spawn")  # no inherited loops or gRPC state
        self.conn, child_conn = context.Pipe()
        self.process: SpawnProcess = context.Process(
            target=_load_process_main, args=(name, role, job, child_conn), name=name, daemon=True
        )
        self.process.start()
        child_conn.close()

    def expect(self, kind: str, timeout: float) -> Any:
        """The payload of the process's next message, which must be ``kind``."""
        deadline = time.monotonic() + timeout
        while not self.conn.poll(0.2):
            if not self.process.is_alive():
                raise BenchError(f"{self.name} exited (code {self.process.exitcode})")
            self._alive()
            if time.monotonic() > deadline:
                raise BenchError(f"no {kind!r} from {self.name} within {timeout:.0f} s")
        try:
            got, payload = self.conn.recv()
        except EOFError:
            raise BenchError(f"{self.name} exited (code {self.process.exitcode})") from None
        if got == "error":
            raise BenchError(f"{self.name} failed:\n{payload}")
        if got != kind:
            raise BenchError(f"expected {kind!r} from {self.name}, got {got!r}")
        return payload

    def has_message(self) -> bool:
        return self.conn.poll()

    def send(self, kind: str, payload: Any = None) -> None:
        self.conn.send((kind, payload))

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


# --------------------------------------------------------------------------- the stack


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_settings(
    broker_url: str,
    redis_url: str,
    data_dir: Path,
    partitions: int,
    worker_batch_bytes: int | None,
) -> Settings:
    """Settings with the development broker's overrides (unless set in the environment)
    and a unique topic prefix, so that runs never see each other's topics or keys; the
    run's credential is ``token`` (``loadtests.credentials``)."""
    key, spec = bench_credential()
    values: dict[str, Any] = {
        key.removeprefix(ENV_PREFIX).lower(): value
        for key, value in DEV_OVERRIDES.items()
        if key.startswith(ENV_PREFIX) and key not in os.environ
    }
    if worker_batch_bytes is not None:
        values["producer_max_batch_size"] = worker_batch_bytes
    values.update(
        broker=broker_url,
        redis_url=redis_url,
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
        partitions=partitions,
        data_dir=str(data_dir),
        http_port=free_port(),
        grpc_port=free_port(),
        auth_api_keys=[spec],
        token=key,
    )
    return Settings(**values)


@dataclass
class Service:
    name: str
    proc: Any  # subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class Stack:
    """What the benchmark started, so that exactly that is stopped again."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.broker: DevBroker | None = None
        self.redis_proc: Any = None  # subprocess.Popen[bytes] | None
        self.services: list[Service] = []
        self.loads: list[LoadProcess] = []
        self.settings: Settings | None = None

    def start_service(
        self, name: str, module: str, settings: Settings, extra_env: Mapping[str, str] | None = None
    ) -> Service:
        """``python -m module`` with ``settings`` (and ``extra_env``, e.g. the secrets
        that settings name by their environment variable)."""
        log_path = self.log_dir / f"{name}.log"
        log_file = log_path.open("ab")
        proc = popen_child(
            [sys.executable, "-m", module],
            env=process_env(settings, extra_env),
            stdout=log_file,
            cwd=REPO_ROOT,
        )
        service = Service(name, proc, log_path, log_file)
        self.services.append(service)
        log.info("started %s (python -m %s, pid %d, log %s)", name, module, proc.pid, log_path)
        return service

    def check_alive(self) -> None:
        """BenchError with the log's tail if a service process has exited."""
        for service in self.services:
            code = service.proc.poll()
            if code is not None:
                raise BenchError(f"{service.name} exited with code {code}:\n{service.tail()}")

    def start_load(
        self,
        name: str,
        role: Callable[[Any, Connection[Message, Message]], Coroutine[Any, Any, None]],
        job: Any,
    ) -> LoadProcess:
        load = LoadProcess(name, role, job, self.check_alive)
        self.loads.append(load)
        return load

    def shutdown(self) -> None:
        for load in reversed(self.loads):
            load.stop()
        self.loads.clear()
        for service in reversed(self.services):
            code = stop_child_process(service.proc, 10.0)
            service.log_file.close()
            log.info("stopped %s (exit %s)", service.name, code)
        self.services.clear()
        if self.settings is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                removed = delete_keys(self.settings)
                log.info("deleted %d Redis keys %s:*", removed, self.settings.redis_key_prefix)
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
            log.info("stopped the broker")
        if self.redis_proc is not None:
            stop_child_process(self.redis_proc, 5.0)
            self.redis_proc = None
            log.info("stopped the Redis server it had started")


def delete_keys(settings: Settings) -> int:
    """Deletes this run's serving, status and counter keys (never anything else)."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        keys = list(client.scan_iter(match=f"{settings.redis_key_prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        return len(keys)
    finally:
        client.close()


async def wait_serving(target: str, alive: Callable[[], None], timeout: float) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        # Through the channel: the type stubs of HealthStub do not declare Check.
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                answer = await check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            alive()
            if time.monotonic() > deadline:
                raise BenchError(f"the gRPC server was not SERVING within {timeout:.0f} s")
            await asyncio.sleep(0.2)


async def publish_catalogue(settings: Settings, skus: int, locations: int, run_id: str) -> None:
    """One ERP balance of ``INITIAL_ON_HAND`` units per SKU and location."""
    producer = AIOKafkaProducer(
        **kafka_client_options(settings),
        acks=1,
        linger_ms=0,
        max_batch_size=PRODUCER_MAX_BATCH_BYTES,
        client_id="bench-seed",
    )
    balances = (
        {
            "type": "erp.balance",
            "event_id": f"{run_id}-erp-{i}-{j}",
            "sku": sku_name(i),
            "location_id": location_name(j),
            "on_hand": INITIAL_ON_HAND,
            "as_of": ERP_AS_OF,
        }
        for i in range(skus)
        for j in range(locations)
    )
    await send_all(producer, settings.erp_topic, balances)


async def send_all(
    producer: AIOKafkaProducer, topic: str, events: Iterable[dict[str, Any]]
) -> None:
    """Start ``producer``, send ``events`` keyed by SKU, wait for every ack, stop it."""
    await producer.start()
    try:
        deliveries = [
            await producer.send(topic, orjson.dumps(event), key=event["sku"].encode())
            for event in events
        ]
        await producer.flush()
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


async def wait_catalogue(
    target: str,
    token: str,
    skus: int,
    locations: int,
    alive: Callable[[], None],
    timeout: float,
) -> None:
    """Until BatchGetAvailability shows every SKU with its full initial stock."""
    names = [sku_name(i) for i in range(skus)]
    deadline = time.monotonic() + timeout
    next_report = time.monotonic() + 2.0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.AvailabilityServiceStub(channel)
        while True:
            complete = 0
            for start in range(0, skus, BATCH_GET_LIMIT):
                request = pb.BatchGetAvailabilityRequest(
                    skus=names[start : start + BATCH_GET_LIMIT], channel=CHANNEL
                )
                try:
                    answer = await stub.BatchGetAvailability(
                        request, timeout=10, metadata=grpc_metadata(token)
                    )
                except grpc.aio.AioRpcError as exc:
                    # UNAVAILABLE until the worker has marked the serving layer built.
                    if exc.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    break
                complete += sum(
                    1
                    for item in answer.items
                    if len(item.locations) == locations
                    and all(loc.on_hand == INITIAL_ON_HAND for loc in item.locations)
                )
            if complete == skus:
                return
            alive()
            now = time.monotonic()
            if now > deadline:
                raise BenchError(f"only {complete} of {skus} SKUs served within {timeout:.0f} s")
            if now >= next_report:
                log.info("seed: %d of %d SKUs served so far", complete, skus)
                next_report = now + 2.0
            await asyncio.sleep(0.5)


# --------------------------------------------------------------------------- measurements


def redis_pid(redis_url: str) -> int | None:
    """The Redis server's process id, if it runs on this machine."""
    client = redis.Redis.from_url(redis_url)
    try:
        pid = int(client.info("server")["process_id"])
    except (redis.RedisError, OSError, KeyError, ValueError):
        return None
    finally:
        client.close()
    return pid if Path(f"/proc/{pid}").exists() else None


class CpuMeter:
    """Per process, over a phase: CPU time (``/proc/PID/stat``) and the time its
    threads were runnable but waited for a CPU (``/proc/PID/task/*/schedstat``), the
    direct sign of a machine with too few cores for its work. Also the machine's
    busy time (``/proc/stat``). All in percent of one core."""

    ticks = os.sysconf("SC_CLK_TCK")

    def __init__(self, pids: Mapping[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self._before: dict[str, tuple[float, float]] = {}
        self._machine_before = 0.0
        self._wall_before = 0.0

    def _process_seconds(self, pid: int) -> tuple[float, float]:
        """(CPU seconds, seconds runnable waiting for a CPU, summed over threads)."""
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / self.ticks  # utime + stime
        except (OSError, IndexError, ValueError):
            return math.nan, math.nan
        waited_ns = 0
        for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                waited_ns += int(task.read_text().split()[1])
        return cpu, waited_ns / 1e9

    def _machine_busy(self) -> float:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        total = sum(values[:8])  # user nice system idle iowait irq softirq steal
        return (total - values[3] - values[4]) / self.ticks

    def start(self) -> None:
        self._before = {name: self._process_seconds(pid) for name, pid in self.pids.items()}
        self._machine_before = self._machine_busy()
        self._wall_before = time.monotonic()

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self._wall_before
        cpu: dict[str, float] = {}
        waited: dict[str, float] = {}
        for name, pid in self.pids.items():
            cpu_after, waited_after = self._process_seconds(pid)
            cpu_before, waited_before = self._before[name]
            cpu[name] = round(100 * (cpu_after - cpu_before) / wall, 1)
            waited[name] = round(100 * (waited_after - waited_before) / wall, 1)
        return {
            "cpu_percent": cpu,
            "runqueue_wait_percent": waited,
            "machine_busy_percent": round(
                100 * (self._machine_busy() - self._machine_before) / wall, 1
            ),
        }


def read_counter(settings: Settings, name: bytes) -> int:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        value = client.hget(f"{settings.redis_key_prefix}:counters", name)
        return int(value) if value is not None else 0
    finally:
        client.close()


def worker_statuses(settings: Settings) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        raw = client.hgetall(f"{settings.redis_key_prefix}:workers")
        return [orjson.loads(value) for value in raw.values()]
    finally:
        client.close()


def summarize_ms(seconds: Sequence[float] | np.ndarray[Any, Any]) -> dict[str, float | int]:
    values = np.asarray(seconds, dtype=float) * 1000.0
    if values.size == 0:
        return {"count": 0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "count": int(values.size),
        "min": round(float(values.min()), 3),
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
        "max": round(float(values.max()), 3),
        "mean": round(float(values.mean()), 3),
    }


def get_summary(result: GetResult, rate: float, callers: int) -> dict[str, Any]:
    elapsed = result.last_done - result.first_sent
    done = len(result.latencies)
    return {
        "target_rate": rate,
        "callers": callers,
        "requests": done,
        "errors": result.errors,
        "achieved_rate": round(done / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_ms": summarize_ms(result.latencies),
        "max_behind_schedule_ms": round(result.max_behind_schedule * 1000, 2),
        "client_cpu_percent": round(100 * result.cpu_seconds / elapsed, 1) if elapsed else None,
    }


class ReachIndex:
    """For each (SKU, location): when on_hand first reached each new low, so that
    "first time on_hand <= x" is a binary search."""

    def __init__(self, recorded: OnHandLog) -> None:
        self.times: dict[int, list[float]] = {}
        self.negated_lows: dict[int, list[int]] = {}  # increasing
        for when, slot, on_hand in zip(
            recorded.times, recorded.slots, recorded.on_hands, strict=True
        ):
            lows = self.negated_lows.setdefault(slot, [])
            if lows and -on_hand <= lows[-1]:
                continue  # not below what was already seen
            lows.append(-on_hand)
            self.times.setdefault(slot, []).append(when)

    def first_reached(self, slot: int, on_hand: int) -> float:
        """When on_hand of ``slot`` was first at or below ``on_hand``; NaN if never."""
        lows = self.negated_lows.get(slot)
        if not lows:
            return math.nan
        position = bisect.bisect_left(lows, -on_hand)
        return self.times[slot][position] if position < len(lows) else math.nan


def watch_summary(
    produced: ProduceResult,
    watched: OnHandLog,
    tapped: OnHandLog | None,
    duration: float,
    window: float,
) -> dict[str, Any]:
    published = np.frombuffer(produced.publish_times, dtype=float)
    count = len(published)
    watch_index = ReachIndex(watched)
    received = np.array(
        [
            watch_index.first_reached(slot, on_hand)
            for slot, on_hand in zip(produced.slots, produced.expected_on_hands, strict=True)
        ]
    )
    delivered = ~np.isnan(received)
    latency = received - published
    start = float(published[0]) if count else 0.0
    last = float(published[-1]) if count else 0.0
    windows = []
    for begin in np.arange(start, start + duration, window):
        chosen = delivered & (published >= begin) & (published < begin + window)
        summary = summarize_ms(latency[chosen])
        windows.append(
            {
                "from_s": round(float(begin - start), 1),
                **{k: summary.get(k) for k in ("count", "p50", "p99", "max")},
            }
        )
    acked = np.frombuffer(produced.ack_times, dtype=float)
    result: dict[str, Any] = {
        "events_published": count,
        "publish_seconds": round(last - start, 3),
        "published_per_second": round((count - 1) / (last - start), 1) if count > 1 else 0.0,
        "max_behind_schedule_ms": round(produced.max_behind_schedule * 1000, 2),
        "producer_errors": produced.errors,
        "producer_cpu_percent": round(100 * produced.cpu_seconds / duration, 1),
        "delivered": int(delivered.sum()),
        "not_delivered": int(count - delivered.sum()),
        "latency_ms": summarize_ms(latency[delivered]),
        "latency_by_window": windows,
        "watch_messages": watched.messages,
        "watch_messages_per_event": round(watched.messages / count, 3) if count else None,
        # Streams that ended with an error during the measurement (and were reopened).
        "watch_stream_errors": watched.errors,
        "watcher_cpu_seconds": round(watched.cpu_seconds, 2),
        "breakdown_ms": {
            "publish_to_broker_ack": summarize_ms((acked - published)[~np.isnan(acked)]),
        },
    }
    if tapped is not None:
        tap_index = ReachIndex(tapped)
        announced = np.array(
            [
                tap_index.first_reached(slot, on_hand)
                for slot, on_hand in zip(produced.slots, produced.expected_on_hands, strict=True)
            ]
        )
        both = delivered & ~np.isnan(announced)
        result["breakdown_ms"]["publish_to_redis_change"] = summarize_ms(
            (announced - published)[~np.isnan(announced)]
        )
        result["breakdown_ms"]["redis_change_to_watch_client"] = summarize_ms(
            (received - announced)[both]
        )
        result["redis_changes"] = tapped.messages
        result["redis_changes_per_event"] = round(tapped.messages / count, 3) if count else None
        result["redis_tap_cpu_seconds"] = round(tapped.cpu_seconds, 2)
    return result


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Params:
    skus: int
    locations: int
    watches: int
    rate: float
    duration: float
    get_rate: float
    get_callers: int
    get_duration: float
    partitions: int
    producer_batch_bytes: int
    worker_batch_bytes: int | None
    redis_url: str
    redis_tap: bool
    seed: int
    ready_timeout: float
    drain_timeout: float
    window: float
    catch_up: int


def run(params: Params, log_dir: Path) -> dict[str, Any]:
    report: dict[str, Any] = {
        "benchmark": "grpc",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_before": [round(v, 2) for v in os.getloadavg()],
        },
        "parameters": asdict(params),
        "targets": {
            "watch_p99_ms": WATCH_P99_TARGET_MS,
            "get_p99_ms": GET_P99_TARGET_MS,
        },
    }
    stack = Stack(log_dir)
    try:
        run_phases(params, stack, report)
    finally:
        stack.shutdown()
    return report


def run_phases(params: Params, stack: Stack, report: dict[str, Any]) -> None:
    run_id = uuid.uuid4().hex[:8]
    # --- the stack
    stack.broker = DevBroker(free_port(), stack.log_dir).start()
    log.info("broker at %s (log %s)", stack.broker.bootstrap_servers, stack.broker.log_path)
    stack.redis_proc = ensure_redis(params.redis_url, stack.log_dir)
    log.info("Redis at %s%s", params.redis_url, " (started)" if stack.redis_proc else "")
    settings = bench_settings(
        stack.broker.url,
        params.redis_url,
        stack.log_dir / "worker-data",
        params.partitions,
        params.worker_batch_bytes,
    )
    stack.settings = settings
    report["parameters"]["topic_prefix"] = settings.topic_prefix
    report["worker_settings"] = settings.model_dump(
        include={
            "producer_max_batch_size",
            "fetch_max_wait_ms",
            "fold_batch_size",
            "fold_batch_within",
            "broker_session_timeout",
        }
    )
    asyncio.run(create_topics(settings))
    log.info("topics %s* created (%d partitions)", settings.topic_prefix, settings.partitions)
    worker = stack.start_service("worker", "streams", settings)
    server = stack.start_service("grpc", "services.grpc", settings)
    target = f"127.0.0.1:{settings.grpc_port}"
    asyncio.run(wait_serving(target, stack.check_alive, params.ready_timeout))
    log.info("gRPC server SERVING at %s", target)

    # --- the catalogue
    events = params.skus * params.locations
    log.info(
        "seed: publishing %d ERP balances (%d SKUs x %d locations)",
        events,
        params.skus,
        params.locations,
    )
    seed_started = time.monotonic()
    asyncio.run(publish_catalogue(settings, params.skus, params.locations, run_id))
    published_in = time.monotonic() - seed_started
    log.info("seed: published in %.1f s; waiting until every SKU is served", published_in)
    asyncio.run(
        wait_catalogue(
            target,
            settings.token.get_secret_value(),
            params.skus,
            params.locations,
            stack.check_alive,
            params.ready_timeout,
        )
    )
    seed_seconds = time.monotonic() - seed_started
    report["seed"] = {
        "events": events,
        "publish_seconds": round(published_in, 2),
        "served_after_seconds": round(seed_seconds, 2),
        "folded_per_second_including_startup": round(events / seed_seconds, 1),
    }
    log.info("seed: all %d SKUs served after %.1f s", params.skus, seed_seconds)

    pids: dict[str, int | None] = {
        "worker": worker.proc.pid,
        "grpc_server": server.proc.pid,
        "broker": stack.broker.proc.pid if stack.broker.proc is not None else None,
        "redis": redis_pid(params.redis_url),
    }

    # --- phase (a): GetAvailability alone
    token = settings.token.get_secret_value()
    get_job = GetJob(
        target,
        token,
        params.skus,
        params.get_rate,
        params.get_callers,
        params.get_duration,
        params.seed,
    )
    getter = stack.start_load("get-a", run_get_client, get_job)
    getter.expect("ready", 60)
    log.info(
        "phase a: GetAvailability at %.0f/s from %d callers for %.0f s, no watches, no events",
        params.get_rate,
        params.get_callers,
        params.get_duration,
    )
    cpu = CpuMeter({**pids, "get_client": getter.process.pid})
    cpu.start()
    getter.send("go", time.time() + 0.2)
    get_idle: GetResult = getter.expect("result", params.get_duration + 60)
    report["get_idle"] = get_summary(get_idle, params.get_rate, params.get_callers)
    report["get_idle"]["cpu"] = cpu.stop()
    log.info("phase a: %s", _latency_line(report["get_idle"]["latency_ms"]))

    # --- the watches
    watcher = stack.start_load(
        "watcher",
        run_watcher,
        WatchJob(
            target, token, params.skus, params.locations, params.watches, params.ready_timeout
        ),
    )
    opened = watcher.expect("ready", params.ready_timeout + 30)
    report["watches_open"] = {
        "watches": params.watches,
        "skus_per_watch": math.ceil(params.skus / params.watches),
        "open_seconds": round(opened["open_seconds"], 3),
        # Opens refused (and retried) until all were open: see run_watcher.
        "open_errors": opened["open_errors"],
    }
    log.info("%d watches open in %.2f s", params.watches, opened["open_seconds"])
    for reason, count in opened["open_errors"].items():
        log.warning("%d watch opens failed and were retried: %s", count, reason)
    tap: LoadProcess | None = None
    if params.redis_tap:
        tap = stack.start_load(
            "redis-tap",
            run_redis_tap,
            TapJob(params.redis_url, settings.redis_key_prefix, params.skus, params.locations),
        )
        tap.expect("ready", 60)

    # --- phase (b): the event stream, with GetAvailability alongside
    producer = stack.start_load(
        "producer",
        run_producer,
        ProduceJob(
            settings,
            settings.pos_topic,
            params.skus,
            params.locations,
            params.rate,
            params.duration,
            run_id,
            params.producer_batch_bytes,
            PRODUCER_LINGER_MS,
        ),
    )
    getter_b = stack.start_load("get-b", run_get_client, replace(get_job, duration=params.duration))
    producer.expect("ready", 60)
    getter_b.expect("ready", 60)
    loads = {
        "producer": producer.process.pid,
        "watcher": watcher.process.pid,
        "get_client": getter_b.process.pid,
        "redis_tap": tap.process.pid if tap is not None else None,
    }
    folded_before = read_counter(settings, COUNTER_FOLDED_SALES)
    log.info(
        "phase b: %.0f pos.sale events/s for %.0f s to %d watches; GetAvailability at %.0f/s",
        params.rate,
        params.duration,
        params.watches,
        params.get_rate,
    )
    cpu = CpuMeter({**pids, **loads})
    cpu.start()
    start_wall = time.time() + 0.5
    producer.send("go", start_wall)
    getter_b.send("go", start_wall)
    next_report = time.monotonic() + 5.0
    while not producer.has_message():
        if time.monotonic() >= next_report:
            folded = read_counter(settings, COUNTER_FOLDED_SALES) - folded_before
            # From the schedule and the worker's counter: its own lag figure is off on
            # the development broker.
            elapsed = time.time() - start_wall
            log.info(
                "phase b: %.0f s, %d sales folded, about %d published and not folded yet",
                elapsed,
                folded,
                max(0, round(elapsed * params.rate) - folded),
            )
            next_report += 5.0
        time.sleep(0.2)
        stack.check_alive()
    produced: ProduceResult = producer.expect("result", 60)
    stream_cpu = cpu.stop()
    get_loaded: GetResult = getter_b.expect("result", 60)
    published = len(produced.publish_times)
    log.info("phase b: %d events published; waiting for the worker to fold them", published)
    drain_started = time.monotonic()
    folded = read_counter(settings, COUNTER_FOLDED_SALES) - folded_before
    folded_while_publishing = folded
    while folded < published:
        stack.check_alive()
        if time.monotonic() - drain_started > params.drain_timeout:
            log.warning(
                "only %d of %d sales folded after %.0f s", folded, published, params.drain_timeout
            )
            break
        time.sleep(0.5)
        folded = read_counter(settings, COUNTER_FOLDED_SALES) - folded_before
    drain_seconds = time.monotonic() - drain_started
    time.sleep(DELIVERY_GRACE)
    statuses = worker_statuses(settings)
    watcher.send("stop")
    watched: OnHandLog = watcher.expect("result", 60)
    tapped: OnHandLog | None = None
    if tap is not None:
        tap.send("stop")
        tapped = tap.expect("result", 60)

    report["watch"] = watch_summary(produced, watched, tapped, params.duration, params.window)
    report["watch"]["worker"] = {
        "sales_folded": folded,
        # The worker adds to its counters once a second: about +-1 s of events.
        "folded_while_publishing": folded_while_publishing,
        "folded_per_second_while_publishing": round(folded_while_publishing / params.duration, 1),
        "seconds_to_fold_the_rest_after_publishing": round(drain_seconds, 2),
        "status_at_end": [
            {k: s.get(k) for k in ("lag", "serving_writes", "feed_published", "feed_pending")}
            for s in statuses
        ],
    }
    report["get_under_load"] = get_summary(get_loaded, params.get_rate, params.get_callers)
    report["cpu_during_stream"] = stream_cpu
    if params.catch_up > 0:
        report["catch_up"] = catch_up(settings, params, stack, pids, run_id)
    report["targets"]["watch_p99_met"] = _met(report["watch"]["latency_ms"], WATCH_P99_TARGET_MS)
    report["targets"]["get_idle_p99_met"] = _met(
        report["get_idle"]["latency_ms"], GET_P99_TARGET_MS
    )
    report["targets"]["get_under_load_p99_met"] = _met(
        report["get_under_load"]["latency_ms"], GET_P99_TARGET_MS
    )
    report["targets"]["all_events_delivered"] = report["watch"]["not_delivered"] == 0


async def publish_sales_burst(settings: Settings, params: Params, count: int, run_id: str) -> None:
    """``count`` sales as fast as the client goes: batched (the worker's lag figures may
    then be off on the development broker; its fold is not)."""
    producer = AIOKafkaProducer(
        **kafka_client_options(settings),
        acks=1,
        linger_ms=5,
        client_id="bench-burst",
    )
    occurred_at = rfc3339_now()
    sales = (
        {
            "type": "pos.sale",
            "event_id": f"{run_id}-burst-{n}",
            "sku": sku_name(n % params.skus),
            "location_id": location_name((n // params.skus) % params.locations),
            "quantity": 1,
            "occurred_at": occurred_at,
        }
        for n in range(count)
    )
    await send_all(producer, settings.pos_topic, sales)


def catch_up(
    settings: Settings, params: Params, stack: Stack, pids: Mapping[str, int | None], run_id: str
) -> dict[str, Any]:
    """Phase (c): the worker's fold capacity. A burst of sales is published at once
    (no watches, no other load) and timed until the worker's counter shows it folded:
    large batches, so this is what the worker does when it is behind."""
    count = params.catch_up
    log.info("phase c: publishing %d sales at once; timing the worker's catch-up", count)
    before = read_counter(settings, COUNTER_FOLDED_SALES)
    cpu = CpuMeter(pids)
    cpu.start()
    started = time.monotonic()
    asyncio.run(publish_sales_burst(settings, params, count, run_id))
    publish_seconds = time.monotonic() - started
    folded = read_counter(settings, COUNTER_FOLDED_SALES) - before
    while folded < count:
        stack.check_alive()
        if time.monotonic() - started > params.drain_timeout:
            log.warning("phase c: only %d of %d folded", folded, count)
            break
        time.sleep(0.1)
        folded = read_counter(settings, COUNTER_FOLDED_SALES) - before
    # Counters reach Redis once a second: the time is up to a second long.
    seconds = time.monotonic() - started
    usage = cpu.stop()
    rate = folded / seconds
    log.info("phase c: %d sales folded in %.1f s: %.0f/s", folded, seconds, rate)
    return {
        "events": count,
        "publish_seconds": round(publish_seconds, 2),
        "folded": folded,
        "seconds_until_folded": round(seconds, 2),
        "folded_per_second": round(rate, 1),
        "cpu": usage,
    }


def _met(summary: Mapping[str, Any], target_ms: float) -> bool:
    return bool(summary.get("count")) and float(summary["p99"]) <= target_ms


def _latency_line(summary: Mapping[str, Any]) -> str:
    if not summary.get("count"):
        return "no samples"
    return (
        f"{summary['count']} samples, p50 {summary['p50']:.2f} ms, p99 {summary['p99']:.2f} ms, "
        f"max {summary['max']:.2f} ms"
    )


# --------------------------------------------------------------------------- the table


def _ms(summary: Mapping[str, Any], key: str) -> str:
    value = summary.get(key)
    return f"{value:9.2f}" if isinstance(value, int | float) else f"{'-':>9}"


def _verdict(met: bool) -> str:
    return "MET" if met else "MISSED"


def _cpu_lines(usage: Mapping[str, Any], cores: int) -> list[str]:
    cpu, waited = usage["cpu_percent"], usage["runqueue_wait_percent"]
    parts = [
        f"{name.replace('_', ' ')} {value:.0f} ({waited[name]:.0f})"
        for name, value in cpu.items()
        if not math.isnan(value)
    ]
    lines, line = [], "  "
    for part in parts:
        if len(line) + len(part) > 96:
            lines.append(line)
            line = "  "
        line += " " + part + " "
    lines.append(line)
    ours = sum(value for value in cpu.values() if not math.isnan(value))
    lines.append(
        f"   machine busy {usage['machine_busy_percent']:.0f} of {100 * cores}, of which"
        f" {max(0.0, usage['machine_busy_percent'] - ours):.0f} not by the processes above"
    )
    return [text.rstrip() for text in lines]


def render_table(report: Mapping[str, Any]) -> str:
    p = report["parameters"]
    machine = report["machine"]
    seed = report["seed"]
    watch = report["watch"]
    targets = report["targets"]
    lines = [
        f"gRPC API benchmark ({report['started_at']}): {machine['cpu_count']} CPUs, "
        f"Python {machine['python']}",
        f"catalogue {p['skus']:,} SKUs x {p['locations']} locations, {p['partitions']} partitions;"
        f" {seed['events']:,} ERP balances served {seed['served_after_seconds']:.1f} s after the"
        f" first was published",
        "",
        f"1. Watch delivery, publish to Kafka -> WatchAvailability client ({p['watches']} watches"
        f" x {report['watches_open']['skus_per_watch']} SKUs, initial figures in"
        f" {report['watches_open']['open_seconds']:.2f} s)",
        f"   {watch['events_published']:,} pos.sale events in {watch['publish_seconds']:.1f} s ="
        f" {watch['published_per_second']:,.1f} ev/s (target {p['rate']:,.0f}; at most"
        f" {watch['max_behind_schedule_ms']:.1f} ms behind schedule)",
        f"   {'':34}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}  (ms)",
    ]
    rows = [("publish -> watch client", watch["latency_ms"])]
    breakdown = watch["breakdown_ms"]
    rows.append(("  publish -> broker ack", breakdown["publish_to_broker_ack"]))
    if "publish_to_redis_change" in breakdown:
        rows.append(("  publish -> change in Redis", breakdown["publish_to_redis_change"]))
        rows.append(
            ("  change in Redis -> watch client", breakdown["redis_change_to_watch_client"])
        )
    for label, summary in rows:
        lines.append(
            f"   {label:34}{_ms(summary, 'p50')}{_ms(summary, 'p95')}{_ms(summary, 'p99')}"
            f"{_ms(summary, 'max')}"
        )
    lines.append(
        f"   target p99 <= {WATCH_P99_TARGET_MS:.0f} ms: {_verdict(targets['watch_p99_met'])};"
        f" delivered {watch['delivered']:,} of {watch['events_published']:,}"
        f" ({watch['not_delivered']} not delivered)"
    )
    coalescing = (
        f"   watch messages {watch['watch_messages']:,} ({watch['watch_messages_per_event']} per"
        " event)"
    )
    if "redis_changes" in watch:
        coalescing += (
            f"; record changes announced in Redis {watch['redis_changes']:,}"
            f" ({watch['redis_changes_per_event']} per event)"
        )
    lines.append(coalescing)
    open_errors = report["watches_open"]["open_errors"]
    for label, errors in (
        ("watch opens refused, then retried", open_errors),
        ("watch streams ended with an error, then reopened", watch["watch_stream_errors"]),
    ):
        for reason, count in errors.items():
            lines.append(f"   {label}: {count} x {reason}")
    by_window = " ".join(
        f"{w['p99']:.0f}" if w.get("p99") is not None else "-" for w in watch["latency_by_window"]
    )
    lines.append(f"   p99 per {p['window']:.0f}-s window (ms): {by_window}")
    worker = watch["worker"]
    lines.append(
        f"   worker folded {worker['folded_while_publishing']:,} sales while they were published"
        f" ({worker['folded_per_second_while_publishing']:,.0f}/s), the other"
        f" {worker['sales_folded'] - worker['folded_while_publishing']:,} in the"
        f" {worker['seconds_to_fold_the_rest_after_publishing']:.1f} s after"
    )
    lines += [
        "",
        f"2. GetAvailability, random SKU, {p['get_callers']} callers at {p['get_rate']:,.0f}"
        " requests/s",
        f"   {'':32}{'requests':>9}{'rate/s':>9}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}"
        f"  errors  p99 <= {GET_P99_TARGET_MS:.0f} ms",
    ]
    for label, key, met in (
        ("(a) no watches, no events", "get_idle", targets["get_idle_p99_met"]),
        (f"(b) {p['watches']} watches + {p['rate']:,.0f} ev/s", "get_under_load",
         targets["get_under_load_p99_met"]),
    ):  # fmt: skip
        get = report[key]
        summary = get["latency_ms"]
        errors = sum(get["errors"].values())
        lines.append(
            f"   {label:32}{get['requests']:>9,}{get['achieved_rate']:>9.1f}{_ms(summary, 'p50')}"
            f"{_ms(summary, 'p95')}{_ms(summary, 'p99')}{_ms(summary, 'max')}"
            f"  {errors:>6}  {_verdict(met)}"
        )
    lines += [
        "",
        "CPU, % of one core (in brackets: runnable but waiting for a CPU, summed over threads)",
        "  in phase (a):",
    ]
    lines += _cpu_lines(report["get_idle"]["cpu"], machine["cpu_count"] or 1)
    lines.append("  in phase (b):")
    lines += _cpu_lines(report["cpu_during_stream"], machine["cpu_count"] or 1)
    catch = report.get("catch_up")
    if catch is not None:
        lines += [
            "",
            f"3. Worker fold capacity: {catch['events']:,} sales published at once (in"
            f" {catch['publish_seconds']:.1f} s), folded after"
            f" {catch['seconds_until_folded']:.1f} s"
            f" = {catch['folded_per_second']:,.0f} events/s (no watches, no other load)",
        ]
        lines += _cpu_lines(catch["cpu"], machine["cpu_count"] or 1)
    settings = report["worker_settings"]
    lines += [
        "",
        "worker: " + ", ".join(f"{name} {value}" for name, value in settings.items()),
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> tuple[Params, Path, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench_grpc",
        description="Watch delivery latency and GetAvailability latency of the gRPC API.",
    )
    parser.add_argument("--skus", type=int, default=2000, help="catalogue SKUs (default 2000)")
    parser.add_argument("--locations", type=int, default=5, help="locations per SKU (default 5)")
    parser.add_argument("--watches", type=int, default=200, help="concurrent watches (200)")
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s (default 1000)")
    parser.add_argument("--duration", type=float, default=30.0, help="event phase, s (30)")
    parser.add_argument("--get-rate", type=float, default=300.0, help="Get requests/s (300)")
    parser.add_argument("--get-callers", type=int, default=4, help="concurrent callers (4)")
    parser.add_argument("--get-duration", type=float, default=10.0, help="phase (a), s (10)")
    parser.add_argument("--partitions", type=int, default=8, help="topic partitions (8)")
    parser.add_argument(
        "--producer-batch-bytes",
        type=int,
        default=PRODUCER_MAX_BATCH_BYTES,
        help=f"max_batch_size of the load producer (default {PRODUCER_MAX_BATCH_BYTES})",
    )
    parser.add_argument(
        "--worker-batch-bytes",
        type=int,
        default=WORKER_BATCH_BYTES,
        help="AVAILABILITY_PRODUCER_MAX_BATCH_SIZE of the worker (default: production's"
        f" {WORKER_BATCH_BYTES}; 1 is the development broker's setting for exact offsets"
        " on restart)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get(f"{ENV_PREFIX}REDIS_URL")
        or str(Settings.model_fields["redis_url"].default),
        help="Redis to use (started on loopback if none answers)",
    )
    parser.add_argument(
        "--no-redis-tap",
        dest="redis_tap",
        action="store_false",
        help="no process that times the changes in Redis (no latency breakdown)",
    )
    parser.add_argument(
        "--catch-up",
        type=int,
        default=None,
        help="phase (c): sales published at once to time the worker's fold capacity"
        " (default 20000, --quick 5000; 0: no phase c)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the SKU choice")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5-s phases")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results file")
    parser.add_argument("--keep-logs", action="store_true", help="keep the services' logs")
    args = parser.parse_args(argv)
    if args.catch_up is None:
        args.catch_up = 5000 if args.quick else 20000
    if args.quick:
        args.duration = min(args.duration, 5.0)
        args.get_duration = min(args.get_duration, 5.0)
    if min(args.skus, args.locations, args.watches, args.get_callers, args.partitions) < 1:
        parser.error("--skus, --locations, --watches, --get-callers, --partitions must be >= 1")
    if min(args.rate, args.duration, args.get_rate, args.get_duration) <= 0:
        parser.error("rates and durations must be positive")
    if args.watches > args.skus:
        parser.error("--watches must not exceed --skus (each watch has its own SKUs)")
    if math.ceil(args.skus / args.watches) > WATCH_SKU_LIMIT:
        parser.error(f"a watch holds at most {WATCH_SKU_LIMIT} SKUs: use more --watches")
    params = Params(
        skus=args.skus,
        locations=args.locations,
        watches=args.watches,
        rate=args.rate,
        duration=args.duration,
        get_rate=args.get_rate,
        get_callers=args.get_callers,
        get_duration=args.get_duration,
        partitions=args.partitions,
        producer_batch_bytes=args.producer_batch_bytes,
        worker_batch_bytes=args.worker_batch_bytes,
        redis_url=args.redis_url,
        redis_tap=args.redis_tap,
        seed=args.seed,
        ready_timeout=120.0,
        drain_timeout=60.0,
        window=max(1.0, args.duration / 6),
        catch_up=args.catch_up,
    )
    return params, args.output, args.keep_logs


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through the cleanup


def run_cli(
    log_prefix: str,
    run_benchmark: Callable[[Path], dict[str, Any]],
    keep_logs: bool,
    publish: Callable[[dict[str, Any]], None],
) -> int:
    """A benchmark's command line: logging, signals, a log directory (kept on failure
    or with ``keep_logs``), then ``publish(report)``. Returns the exit code."""
    logging.basicConfig(
        level=logging.INFO, format="[bench %(asctime)s] %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _terminate)
    log_dir = Path(tempfile.mkdtemp(prefix=log_prefix))
    failed = True
    try:
        report = run_benchmark(log_dir)
        failed = False
    except BenchError as exc:
        log.error("benchmark failed: %s", exc)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    finally:
        if failed or keep_logs:
            log.info("logs kept in %s", log_dir)
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
    publish(report)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    params, output, keep_logs = parse_args(argv)

    def publish(report: dict[str, Any]) -> None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2) + "\n")
        print(render_table(report), flush=True)
        log.info("results written to %s", output)

    return run_cli("bench-grpc-", lambda log_dir: run(params, log_dir), keep_logs, publish)


if __name__ == "__main__":
    # Run the module under its import name, not as __main__: the load processes
    # (spawned) then find its functions and classes by that name when unpickling.
    from loadtests.bench_grpc import main as main_of_module

    sys.exit(main_of_module())
