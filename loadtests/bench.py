"""``python -m loadtests.bench`` (``make bench``): fold rate against the framework's
floor, and the memory it takes.

It starts what it measures on this machine: a development broker (Tansu) on a free
port and Redis (the one answering at ``--redis-url``, started if none does). Each
measurement gets topics and Redis keys of its own (a unique prefix). Then, for the
same workload (``loadtests.workload``: a catalogue of ``--skus`` x ``--locations``
ERP balances, then ``--mix-events`` events of the realistic mix):

**Fold.** The workload is published in full first, then the consumers start and
work through the backlog: its rate is what they sustain. In this order, so that the
machine's drift (shared notes "read-path") falls on both sides alike:

1. the floor: ``loadtests.floor_agent``, one process (a Faust agent that only
   decodes events, with the worker's app class, consumer settings and batching);
2. the stream worker (``python -m streams``): one process, then two in one group;
3. the floor with two processes.

A run's rate is the events counted between the first and the last moment the
counters moved (workers report them once per heartbeat), divided by that time. The
ratio compares each worker count with the floor at the same count.

**Memory** (after the one-worker run, the whole workload folded): Redis bytes per
SKU-location (``MEMORY USAGE`` of a sample of serving records) and the worker's
resident memory per 100,000 SKU-locations.

**State** (``loadtests.bench_state``): the worker's memory over a long
reservation-heavy run, with a short state horizon and with the default one.

Writes a table to stdout and JSON to ``--output`` (default ``bench-results/bench.json``)
with a markdown summary beside it; logs progress to stderr. Everything it started
is stopped on exit (also on Ctrl-C or failure), and its Redis keys are deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import platform
import random
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import grpc
import numpy as np
import orjson
import redis
from aiokafka import AIOKafkaProducer

from availability.ats import LocationAvailability, SkuAvailability
from dev.broker import DevBroker
from dev.processes import stop_process as stop_child_process
from dev.redis_server import ensure_redis
from dev.sample_data import topic_for
from infra.config import Settings
from infra.kafka import kafka_client_options
from infra.store import AvailabilityStore
from infra.topics import create_topics
from loadtests import bench_push
from loadtests.bench_grpc import (
    WORKER_BATCH_BYTES,
    BenchError,
    CpuMeter,
    ProduceJob,
    ProduceResult,
    Service,
    Stack,
    bench_settings,
    delete_keys,
    free_port,
    redis_pid,
    run_cli,
    run_producer,
    summarize_ms,
)
from loadtests.bench_state import StateParams, measure_state_memory, state_lines
from loadtests.credentials import bearer, grpc_metadata
from loadtests.floor_agent import FLOOR_FIELD, floor_key
from loadtests.http_load import (
    LoadRun,
    ProbeJob,
    ProbeResult,
    run_h2load_grpc,
    run_http_prober,
    run_wrk,
)
from loadtests.workload import (
    CATALOGUE_ON_HAND,
    POPULARITIES,
    Event,
    catalogue,
    event_mix,
    location_name,
    sku_name,
)
from services.grpc.gen.availability.v1 import availability_pb2 as pb

log = logging.getLogger("bench")

REPO_ROOT: Final[Path] = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT: Final[Path] = REPO_ROOT / "bench-results" / "bench.json"
FOLD_RATIO_TARGET: Final[float] = 0.75
READ_RATIO_TARGET: Final[float] = 0.80
READ_P99_TARGET_MS: Final[float] = 5.0
FRESHNESS_P99_TARGET_MS: Final[float] = 100.0
FRESHNESS_TARGET_RATE: Final[float] = 1000.0
# "The highest rate the fold sustains": tried at these fractions of the one-worker
# backlog rate, highest first, until the fold keeps up (every probed event seen,
# p99 within SUSTAINED_P99_MS). During these runs the producer, the prober and the
# HTTP server share the two cores with the worker, and every sale is on a SKU of its
# own, so the worker folds less than it did alone on the backlog.
HIGH_RATE_FRACTIONS: Final[tuple[float, ...]] = (0.5, 0.3, 0.2)
SUSTAINED_P99_MS: Final[float] = 500.0
SECTIONS: Final[tuple[str, ...]] = ("reads", "fold", "freshness", "state", "push")
GRPC_GET_METHOD: Final[str] = "/availability.v1.AvailabilityService/GetAvailability"
POLL_INTERVAL: Final[float] = 0.2
MEMORY_SAMPLE: Final[int] = 500  # serving records whose MEMORY USAGE is taken
# The freshness producer lingers as Kafka's producer does by default since 4.0
# (linger.ms=5): sending each event in a request of its own cost the development
# broker about 60% of a core at 1,000 events/s, on a machine of two. The linger counts
# in the latency measured (from just before the send).
PRODUCER_LINGER_MS: Final[int] = 5
# The load producer batches: the broker takes the backlog in seconds.
LOAD_BATCH_BYTES: Final[int] = 65536


@dataclass(frozen=True)
class Params:
    skus: int
    locations: int
    mix_events: int
    partitions: int
    redis_url: str
    seed: int
    fold_timeout: float
    workers: tuple[int, ...]
    floor: bool
    worker_batch_bytes: int
    sections: tuple[str, ...]
    read_seconds: float
    read_rounds: int
    read_connections: int
    freshness_seconds: float
    freshness_rates: tuple[str, ...]
    popularity: str
    probes_per_second: float
    state_seconds: float
    state_rate: float
    state_horizon: float

    @property
    def events(self) -> int:
        return self.skus * self.locations + self.mix_events


# --------------------------------------------------------------------------- workload


def workload(params: Params, run_id: str) -> Iterable[Event]:
    yield from catalogue(run_id, params.skus, params.locations)
    yield from event_mix(
        run_id, params.skus, params.locations, params.mix_events, params.seed, params.popularity
    )


async def publish(settings: Settings, events: Iterable[Event]) -> int:
    """Send ``events`` keyed by SKU to their input topics; returns how many, once every
    one is acknowledged."""
    producer = AIOKafkaProducer(
        **kafka_client_options(settings),
        acks=1,
        linger_ms=5,
        max_batch_size=LOAD_BATCH_BYTES,
        client_id="bench-load",
    )
    await producer.start()
    try:
        deliveries = []
        for event in events:
            topic = topic_for(settings, event["type"])
            deliveries.append(
                await producer.send(topic, orjson.dumps(event), key=event["sku"].encode())
            )
        await producer.flush()
        await asyncio.gather(*deliveries)
        return len(deliveries)
    finally:
        await producer.stop()


# --------------------------------------------------------------------------- counting


def folded_count(client: redis.Redis, settings: Settings) -> int:
    counters: dict[bytes, bytes] = client.hgetall(f"{settings.redis_key_prefix}:counters")  # type: ignore[assignment]
    return sum(
        int(value)
        for name, value in counters.items()
        if name.startswith((b"folded:", b"dead_letters:"))
    )


def decoded_count(client: redis.Redis, settings: Settings) -> int:
    value = client.hget(floor_key(settings.redis_key_prefix), FLOOR_FIELD)
    return int(value) if value is not None else 0


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for process {pid}")


@dataclass
class FoldRun:
    kind: str  # "floor" or "worker"
    processes: int
    events: int
    published_in: float
    started_in: float  # from starting the processes to the first counted event
    seconds: float  # first to last counted event
    counted: int
    cpu: dict[str, Any]
    rss: list[int]
    events_per_batch: float | None  # the worker's fold batches (None: not counted)

    @property
    def rate(self) -> float:
        return self.counted / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data["events_per_second"] = round(self.rate)
        return data


AfterFold = Callable[[Settings, "FoldRun", list[Service]], None]


def measure_fold(
    stack: Stack, params: Params, kind: str, processes: int, after: AfterFold | None = None
) -> FoldRun:
    """Publish the workload to fresh topics, start ``processes`` consumers of ``kind``
    and time them through the backlog; then ``after(settings, run, consumers)`` while
    they still run (the backlog folded)."""
    assert stack.broker is not None
    data_root = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=stack.log_dir))
    settings = bench_settings(
        stack.broker.url,
        params.redis_url,
        data_root,
        params.partitions,
        params.worker_batch_bytes,
    )
    stack.settings = settings  # its keys are deleted on shutdown
    asyncio.run(create_topics(settings))
    run_id = settings.topic_prefix.rstrip(".")
    started = time.monotonic()
    published = asyncio.run(publish(settings, workload(params, run_id)))
    published_in = time.monotonic() - started
    log.info(
        "%s x%d: published %d events in %.1f s (%.0f/s)",
        kind,
        processes,
        published,
        published_in,
        published / published_in,
    )
    module = "streams" if kind == "worker" else "loadtests.floor_agent"
    count = folded_count if kind == "worker" else decoded_count
    services: list[Service] = []
    already_running = len(stack.services)
    client = redis.Redis.from_url(params.redis_url)
    try:
        launched = time.monotonic()
        for n in range(processes):
            own = settings.model_copy(update={"data_dir": str(data_root / f"p{n}")})
            services.append(stack.start_service(f"{kind}-{processes}-{n}", module, own))
        meter = CpuMeter(
            {s.name: s.proc.pid for s in services} | {"redis": redis_pid(params.redis_url)}
        )
        first_at = last_at = 0.0
        first_count = last = 0
        next_log = time.monotonic() + 10.0
        deadline = time.monotonic() + params.fold_timeout
        while last < published:
            time.sleep(POLL_INTERVAL)
            stack.check_alive()
            now = time.monotonic()
            value = count(client, settings)
            if value > last:
                if first_at == 0.0:
                    first_at, first_count = now, value
                    meter.start()
                last_at, last = now, value
            if now > deadline:
                raise BenchError(
                    f"{kind} x{processes}: {last} of {published} events in"
                    f" {params.fold_timeout:.0f} s"
                )
            if now >= next_log:
                log.info("%s x%d: %d of %d events", kind, processes, last, published)
                next_log = now + 10.0
        cpu = meter.stop()
        batches = client.hget(f"{settings.redis_key_prefix}:counters", "batches")
        rss = [rss_bytes(s.proc.pid) for s in services]
        run = FoldRun(
            kind=kind,
            processes=processes,
            events=published,
            published_in=round(published_in, 2),
            started_in=round(first_at - launched, 2),
            seconds=round(last_at - first_at, 2),
            counted=last - first_count,
            cpu=cpu,
            rss=rss,
            events_per_batch=round(published / int(batches), 1) if batches else None,
        )
        log.info("%s x%d: %.0f events/s", kind, processes, run.rate)
        if after is not None:
            after(settings, run, services)
        return run
    finally:
        stop_services_since(stack, already_running)
        client.close()
        delete_keys(settings)
        stack.settings = None


def stop_services_since(stack: Stack, already_running: int) -> None:
    """Stop the services a measurement started (those after the first ``already_running``)."""
    for service in reversed(stack.services[already_running:]):
        stop_child_process(service.proc, 10.0)
        service.log_file.close()
        stack.services.remove(service)


def measure_memory(
    client: redis.Redis, settings: Settings, params: Params, worker_rss: int
) -> dict[str, Any]:
    rng = random.Random(params.seed)
    skus = rng.sample(range(params.skus), min(MEMORY_SAMPLE, params.skus))
    prefix = settings.redis_key_prefix
    sizes = [client.memory_usage(f"{prefix}:sku:{{SKU-{i:06d}}}", samples=0) or 0 for i in skus]
    missing = sum(1 for size in sizes if size == 0)
    if missing:
        raise BenchError(f"{missing} of {len(sizes)} sampled SKUs have no serving record")
    per_sku = sum(sizes) / len(sizes)
    sku_locations = params.skus * params.locations
    return {
        "redis_bytes_per_sku": round(per_sku),
        "redis_bytes_per_sku_location": round(per_sku / params.locations, 1),
        "redis_sample_records": len(sizes),
        "worker_rss_bytes": worker_rss,
        "worker_rss_mib_per_100k_sku_locations": round(
            worker_rss / 2**20 / (sku_locations / 100_000), 1
        ),
        "sku_locations": sku_locations,
    }


# --------------------------------------------------------------------------- reads


async def seed_serving(settings: Settings, skus: int, locations: int) -> None:
    """Serving records as the worker writes them for the catalogue (no worker needed)."""
    store = AvailabilityStore.for_settings(settings)
    try:
        names = [location_name(j) for j in range(locations)]
        records = [
            SkuAvailability(
                sku_name(i),
                tuple(LocationAvailability(n, CATALOGUE_ON_HAND, 0, 0, 0, 0, {}) for n in names),
                None,
            )
            for i in range(skus)
        ]
        for start in range(0, len(records), 500):
            await store.write_records(records[start : start + 500])
    finally:
        await store.close()


def wait_http(url: str, stack: Stack, timeout: float = 60.0, *, authorization: str) -> None:
    """Until ``url`` answers 200."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"Authorization": authorization})
    while True:
        try:
            with urllib.request.urlopen(request, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        stack.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{url} did not answer 200 within {timeout:.0f} s")
        time.sleep(0.2)


def _read_pair(
    stack: Stack,
    params: Params,
    kind: str,
    targets: Mapping[str, tuple[str, Service]],
    run_once: Callable[[str, int], LoadRun],
) -> dict[str, Any]:
    """``params.read_rounds`` rounds of each target in turn (interleaved), same load:
    ``run_once(address, round)`` is one run of the load generator."""
    runs: dict[str, list[LoadRun]] = {name: [] for name in targets}
    cpu: dict[str, list[float]] = {name: [] for name in targets}
    for round_ in range(params.read_rounds):
        for name, (address, service) in targets.items():
            meter = CpuMeter({"server": service.proc.pid})
            meter.start()
            result = run_once(address, round_)
            cpu[name].append(meter.stop()["cpu_percent"]["server"])
            runs[name].append(result)
            log.info(
                "read %s, %s: %.0f req/s, p99 %.2f ms",
                kind,
                name,
                result.rate,
                result.p99_ms,
            )
            if result.errors:
                raise BenchError(f"{name}: {result.errors} failed {kind} requests")
    summary: dict[str, Any] = {"connections": params.read_connections}
    for name, results in runs.items():
        summary[name] = {
            "runs": [r.summary() for r in results],
            "requests_per_second": round(sum(r.rate for r in results) / len(results)),
            "p50_ms": round(max(r.p50_ms for r in results), 3),
            "p99_ms": round(max(r.p99_ms for r in results), 3),
            "server_cpu_percent": cpu[name],
        }
    summary["ratio"] = round(
        summary["service"]["requests_per_second"] / summary["baseline"]["requests_per_second"], 3
    )
    return summary


def _wrk_runs(params: Params, kind: str, authorization: str) -> Callable[[str, int], LoadRun]:
    def run_once(url: str, round_: int) -> LoadRun:
        return run_wrk(
            url,
            kind=kind,
            authorization=authorization,
            skus=params.skus,
            connections=params.read_connections,
            seconds=params.read_seconds,
            seed=params.seed + round_,
        )

    return run_once


def measure_reads(stack: Stack, params: Params) -> dict[str, Any]:
    """HTTP single and batch reads of the service against the bare ASGI baseline."""
    assert stack.broker is not None
    data_root = Path(tempfile.mkdtemp(prefix="reads-", dir=stack.log_dir))
    settings = bench_settings(
        stack.broker.url, params.redis_url, data_root, params.partitions, None
    )
    stack.settings = settings
    already_running = len(stack.services)
    try:
        asyncio.run(create_topics(settings))
        asyncio.run(seed_serving(settings, params.skus, params.locations))
        log.info("reads: %d serving records written", params.skus)
        baseline_settings = settings.model_copy(update={"http_port": free_port()})
        service = stack.start_service("http", "services.http", settings)
        baseline = stack.start_service(
            "http-baseline", "loadtests.baseline_asgi", baseline_settings
        )
        targets = {
            "service": (f"http://127.0.0.1:{settings.http_port}", service),
            "baseline": (f"http://127.0.0.1:{baseline_settings.http_port}", baseline),
        }
        authorization = bearer(settings.token.get_secret_value())
        for url, _ in targets.values():
            wait_http(f"{url}/v1/availability/{sku_name(0)}", stack, authorization=authorization)
            run_wrk(
                url,
                kind="single",
                skus=params.skus,
                connections=4,
                seconds=2,
                seed=0,
                authorization=authorization,
            )
        single_runs = _wrk_runs(params, "single", authorization)
        single = _read_pair(stack, params, "single", targets, single_runs)
        batch = _read_pair(
            stack, params, "batch", targets, _wrk_runs(params, "batch", authorization)
        )
        # p99 at half the service's throughput: each connection pauses between requests.
        rate = single["service"]["requests_per_second"] / 2
        delay_ms = 5
        url, server = targets["service"]
        connections = max(1, math.ceil(rate * delay_ms / 1000))
        probe = run_wrk(
            url,
            kind="single",
            skus=params.skus,
            connections=connections,
            seconds=2,
            seed=params.seed,
            delay_ms=delay_ms,
            authorization=authorization,
        )
        # A request cycle is the pause plus the request's own time: calibrate on it.
        connections = max(1, round(connections * rate / max(probe.rate, 1.0)))
        meter = CpuMeter({"server": server.proc.pid})
        meter.start()
        half = run_wrk(
            url,
            kind="single",
            skus=params.skus,
            connections=connections,
            seconds=params.read_seconds,
            seed=params.seed,
            delay_ms=delay_ms,
            authorization=authorization,
        )
        if half.errors:
            raise BenchError(f"service: {half.errors} failed requests at half load")
        log.info("read at half load: %.0f req/s, p99 %.2f ms", half.rate, half.p99_ms)
        half_cpu = meter.stop()["cpu_percent"]["server"]
        stop_services_since(stack, already_running)  # the HTTP servers: CPU for gRPC's
        return {
            "single": single,
            "batch": batch,
            "single_half_load": {
                **half.summary(),
                "target_requests_per_second": round(rate),
                "connections": connections,
                "server_cpu_percent": half_cpu,
            },
            "grpc_get": measure_grpc_reads(stack, params, settings),
        }
    finally:
        stop_services_since(stack, already_running)
        delete_keys(settings)
        stack.settings = None


def grpc_answer(
    address: str, request: bytes, stack: Stack, token: str, timeout: float = 60.0
) -> bytes:
    """The serialized answer of ``GetAvailability`` at ``address``, once it serves."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(GRPC_GET_METHOD)
        while True:
            try:
                answer: bytes = call(request, timeout=2, metadata=grpc_metadata(token))
                return answer
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise BenchError(f"{address}: GetAvailability failed: {exc}") from exc
            stack.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"gRPC at {address} did not answer within {timeout:.0f} s")
            time.sleep(0.2)


def measure_grpc_reads(stack: Stack, params: Params, settings: Settings) -> dict[str, Any]:
    """gRPC ``GetAvailability`` of the service against the bare ``grpc.aio`` baseline,
    loaded by h2load (one SKU: see ``loadtests.http_load``)."""
    already_running = len(stack.services)
    try:
        targets = {}
        for name, module in (("service", "services.grpc"), ("baseline", "loadtests.baseline_grpc")):
            own = settings.model_copy(update={"grpc_port": free_port()})
            server = stack.start_service(f"grpc-{name}", module, own)
            targets[name] = (f"127.0.0.1:{own.grpc_port}", server)
        sku = sku_name(params.skus // 2)
        request = pb.GetAvailabilityRequest(sku=sku).SerializeToString()
        token = settings.token.get_secret_value()
        answers = {
            name: grpc_answer(address, request, stack, token)
            for name, (address, _) in targets.items()
        }
        if answers["service"] != answers["baseline"]:
            raise BenchError("the gRPC service and its baseline answer differently")
        for address, _ in targets.values():
            run_h2load_grpc(
                address,
                GRPC_GET_METHOD,
                request,
                connections=4,
                seconds=2,
                authorization=bearer(token),
            )

        def run_once(address: str, round_: int) -> LoadRun:
            return run_h2load_grpc(
                address,
                GRPC_GET_METHOD,
                request,
                connections=params.read_connections,
                seconds=params.read_seconds,
                authorization=bearer(token),
            )

        result = _read_pair(stack, params, "grpc get", targets, run_once)
        return {**result, "sku": sku, "answer_bytes": len(answers["service"])}
    finally:
        stop_services_since(stack, already_running)


# --------------------------------------------------------------------------- freshness


def measure_freshness(
    stack: Stack, params: Params, settings: Settings, rate: float
) -> dict[str, Any]:
    """Sales at ``rate`` events/s for ``freshness_seconds``; for a sample of them, the
    time from publishing to the first HTTP answer that shows the sale."""
    log.info("freshness at %.0f events/s for %.0f s", rate, params.freshness_seconds)
    url = f"http://127.0.0.1:{settings.http_port}"
    run_id = f"{settings.topic_prefix}fresh{round(rate)}"
    producer = stack.start_load(
        "producer",
        run_producer,
        ProduceJob(
            **kafka_client_options(settings),
            topic=settings.pos_topic,
            skus=params.skus,
            locations=params.locations,
            rate=rate,
            duration=params.freshness_seconds,
            run_id=run_id,
            max_batch_bytes=LOAD_BATCH_BYTES,
            linger_ms=PRODUCER_LINGER_MS,
        ),
    )
    prober = stack.start_load(
        "prober",
        run_http_prober,
        ProbeJob(
            base_url=url,
            skus=params.skus,
            locations=params.locations,
            rate=rate,
            duration=params.freshness_seconds,
            probes_per_second=params.probes_per_second,
            poll_interval=0.002,
            timeout=10.0,
            seed=params.seed,
        ),
    )
    try:
        producer.expect("ready", 60)
        prober.expect("ready", 120)
        pids = {service.name: service.proc.pid for service in stack.services}
        pids |= {"producer": producer.process.pid, "prober": prober.process.pid}
        if stack.broker is not None and stack.broker.proc is not None:
            pids["broker"] = stack.broker.proc.pid
        pids["redis"] = redis_pid(params.redis_url)
        meter = CpuMeter(pids)
        meter.start()
        start_wall = time.time() + 0.5
        producer.send("go", start_wall)
        prober.send("go", start_wall)
        timeout = params.freshness_seconds + 60
        produced: ProduceResult = producer.expect("result", timeout)
        probed: ProbeResult = prober.expect("result", timeout)
        cpu = meter.stop()
    finally:
        for load in (producer, prober):
            load.stop()
            stack.loads.remove(load)
    published = np.frombuffer(produced.publish_times, dtype=float)
    events = np.frombuffer(probed.events, dtype=np.int64)
    seen = np.frombuffer(probed.seen, dtype=float)
    latencies = seen - published[events]
    shown = latencies[~np.isnan(latencies)]
    result = {
        "rate": round(rate),
        "seconds": params.freshness_seconds,
        "events": len(published),
        "producer_errors": produced.errors,
        "producer_max_behind_schedule_ms": round(produced.max_behind_schedule * 1000, 1),
        "probed_events": len(events),
        "never_seen": int(np.isnan(latencies).sum()),
        "probe_requests": probed.requests,
        "probe_errors": probed.errors,
        "latency_ms": summarize_ms(shown),
        "cpu": cpu,
    }
    log.info("freshness at %.0f events/s: %s", rate, result["latency_ms"])
    return result


# --------------------------------------------------------------------------- the run


def run(params: Params, log_dir: Path) -> dict[str, Any]:
    report: dict[str, Any] = {
        "benchmark": "availability",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "memory_gib": round(
                os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
            ),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_before": [round(v, 2) for v in os.getloadavg()],
        },
        "parameters": asdict(params),
        "targets": {
            "read_ratio": READ_RATIO_TARGET,
            "read_p99_ms_at_half_load": READ_P99_TARGET_MS,
            "fold_ratio": FOLD_RATIO_TARGET,
            "freshness_p99_ms": FRESHNESS_P99_TARGET_MS,
            "freshness_rate": FRESHNESS_TARGET_RATE,
        },
    }
    stack = Stack(log_dir)
    try:
        stack.broker = DevBroker(free_port(), stack.log_dir).start()
        log.info("broker at %s", stack.broker.bootstrap_servers)
        stack.redis_proc = ensure_redis(params.redis_url, stack.log_dir)
        if "reads" in params.sections:
            report["reads"] = measure_reads(stack, params)
        if "fold" in params.sections:
            run_fold_sections(stack, params, report)
        if "state" in params.sections:
            report["state"] = measure_state_memory(stack, state_params(params), fresh_broker)
        if "push" in params.sections:  # loadtests.bench_push
            report["push"] = bench_push.measure(stack, bench_push.from_bench(params))
    finally:
        stack.shutdown()
    report["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    return report


def state_params(params: Params) -> StateParams:
    return StateParams(
        seconds=params.state_seconds,
        rate=params.state_rate,
        horizon=params.state_horizon,
        skus=params.skus,
        partitions=params.partitions,
        redis_url=params.redis_url,
        worker_batch_bytes=params.worker_batch_bytes,
        seed=params.seed,
    )


def wait_caught_up(stack: Stack, settings: Settings, events: int, timeout: float = 300.0) -> None:
    """Until the worker has folded ``events`` in all: a run starts with no backlog."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        deadline = time.monotonic() + timeout
        while (folded := folded_count(client, settings)) < events:
            stack.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"the worker folded {folded} of {events} events in {timeout} s")
            time.sleep(POLL_INTERVAL)
    finally:
        client.close()


def sustained(measured: Mapping[str, Any]) -> bool:
    """The fold kept up: every probed event seen, p99 within SUSTAINED_P99_MS."""
    p99 = measured["latency_ms"].get("p99", math.inf)
    return bool(measured["never_seen"] == 0 and p99 <= SUSTAINED_P99_MS)


def highest_sustained(
    stack: Stack,
    params: Params,
    settings: Settings,
    backlog_rate: float,
    measure: Callable[[float], dict[str, Any]],
) -> list[dict[str, Any]]:
    """Freshness at falling fractions of the backlog rate until the fold keeps up;
    every run is reported, the last one ``sustained`` (unless none was)."""
    runs = []
    for fraction in HIGH_RATE_FRACTIONS:
        measured = measure(fraction * backlog_rate)
        measured["fraction_of_backlog_rate"] = fraction
        measured["sustained"] = sustained(measured)
        runs.append(measured)
        if measured["sustained"]:
            break
    return runs


def fresh_broker(stack: Stack) -> None:
    """A new, empty development broker for the next measurement: the one before holds
    the topics of the runs so far in memory, and it works more slowly the more it
    holds (seen: a second floor run a quarter slower than the first)."""
    if stack.broker is not None:
        stack.broker.stop()
    stack.broker = DevBroker(free_port(), stack.log_dir).start()
    log.info("broker at %s", stack.broker.bootstrap_servers)


def run_fold_sections(stack: Stack, params: Params, report: dict[str, Any]) -> None:
    """The fold runs; after the one-worker run, memory and (if asked) freshness."""
    memory: dict[str, Any] = {}
    freshness: list[dict[str, Any]] = []

    def after_one_worker(settings: Settings, run: FoldRun, workers: list[Service]) -> None:
        client = redis.Redis.from_url(params.redis_url)
        try:
            memory.update(measure_memory(client, settings, params, run.rss[0]))
        finally:
            client.close()
        if "freshness" not in params.sections:
            return
        stack.start_service("http-fresh", "services.http", settings)
        wait_http(
            f"http://127.0.0.1:{settings.http_port}/v1/availability/{sku_name(0)}",
            stack,
            authorization=bearer(settings.token.get_secret_value()),
        )
        published = [run.events]

        def measure(rate: float) -> dict[str, Any]:
            wait_caught_up(stack, settings, published[0])  # no backlog from the last run
            measured = measure_freshness(stack, params, settings, rate)
            published[0] += measured["events"]
            return measured

        for rate in params.freshness_rates:
            if rate == "high":
                freshness.extend(highest_sustained(stack, params, settings, run.rate, measure))
            else:
                freshness.append(measure(float(rate)))

    runs: list[FoldRun] = []
    floors: dict[int, FoldRun] = {}
    order = [("floor", 1)] if params.floor else []
    order += [("worker", n) for n in params.workers]
    if params.floor:
        order += [("floor", n) for n in params.workers if n != 1]
    for kind, processes in order:
        after = after_one_worker if (kind, processes) == ("worker", 1) else None
        fresh_broker(stack)
        measured = measure_fold(stack, params, kind, processes, after)
        runs.append(measured)
        if kind == "floor":
            floors[processes] = measured
    fold: dict[str, Any] = {"runs": [r.summary() for r in runs], "ratios": {}}
    for measured in runs:
        if measured.kind == "worker" and measured.processes in floors:
            floor = floors[measured.processes]
            fold["ratios"][str(measured.processes)] = round(measured.rate / floor.rate, 3)
    report["fold"] = fold
    report["memory"] = memory
    if freshness:
        report["freshness"] = freshness


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


READ_HEADER: Final[str] = (
    "                          service req/s  p50 ms  p99 ms | baseline req/s  p99 ms | ratio"
)


def _read_lines(reads: Mapping[str, Any]) -> list[str]:
    lines = [
        "",
        f"HTTP reads ({reads['single']['connections']} connections, one uvicorn worker each)",
        READ_HEADER,
    ]
    for kind in ("single", "batch"):
        pair = reads[kind]
        service, baseline = pair["service"], pair["baseline"]
        label = "single SKU" if kind == "single" else "batch of 100"
        lines.append(
            f"  {label:<22} {service['requests_per_second']:>13}  {service['p50_ms']:>6.2f}"
            f"  {service['p99_ms']:>6.2f} | {baseline['requests_per_second']:>14}"
            f"  {baseline['p99_ms']:>6.2f} | {pair['ratio']:.0%}"
        )
    ratio = reads["single"]["ratio"]
    half = reads["single_half_load"]
    lines += [
        f"  single read / baseline: {ratio:.0%} (target >= {READ_RATIO_TARGET:.0%}:"
        f" {_verdict(ratio >= READ_RATIO_TARGET)})",
        f"  single read at half load: {half['requests_per_second']} req/s, p99"
        f" {half['p99_ms']:.2f} ms (target <= {READ_P99_TARGET_MS:g} ms:"
        f" {_verdict(half['p99_ms'] <= READ_P99_TARGET_MS)})",
    ]
    grpc_get = reads.get("grpc_get")
    if grpc_get:
        service, baseline = grpc_get["service"], grpc_get["baseline"]
        lines += [
            "",
            f"gRPC reads ({grpc_get['connections']} connections, h2load, one SKU)",
            READ_HEADER,
            f"  {'GetAvailability':<22} {service['requests_per_second']:>13}"
            f"  {service['p50_ms']:>6.2f}  {service['p99_ms']:>6.2f}"
            f" | {baseline['requests_per_second']:>14}  {baseline['p99_ms']:>6.2f}"
            f" | {grpc_get['ratio']:.0%}",
        ]
    return lines


def _freshness_lines(freshness: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["", "freshness (publish -> visible over HTTP)   probes  p50 ms   p99 ms  never seen"]
    for measured in freshness:
        latency = measured["latency_ms"]
        p50 = latency.get("p50", math.nan)
        p99 = latency.get("p99", math.nan)
        label = f"at {measured['rate']} events/s"
        if "fraction_of_backlog_rate" in measured:
            state = "kept up" if measured["sustained"] else "fell behind"
            label += f" ({measured['fraction_of_backlog_rate']:.0%}, {state})"
        lines.append(
            f"  {label:<40} {measured['probed_events']:>6} {p50:>7.1f} {p99:>8.1f}"
            f"  {measured['never_seen']:>10}"
        )
    at_target = next((m for m in freshness if m["rate"] == round(FRESHNESS_TARGET_RATE)), None)
    if at_target is not None:
        p99 = at_target["latency_ms"].get("p99", math.inf)
        met = p99 <= FRESHNESS_P99_TARGET_MS and at_target["never_seen"] == 0
        lines.append(
            f"  p99 at {FRESHNESS_TARGET_RATE:.0f} events/s: {p99:.1f} ms"
            f" (target <= {FRESHNESS_P99_TARGET_MS:g} ms: {_verdict(met)})"
        )
    return lines


def render_table(report: Mapping[str, Any]) -> str:
    machine, params = report["machine"], report["parameters"]
    lines = [
        f"machine: {machine['cpu_count']} cores, {machine['memory_gib']} GiB; workload"
        f" {params['skus']} SKUs x {params['locations']} locations"
        f" + {params['mix_events']} mixed events ({params['popularity']} SKU popularity)",
    ]
    if "reads" in report:
        lines += _read_lines(report["reads"])
    if "fold" in report:
        lines += [
            "",
            "fold (backlog)         events/s  seconds  events/batch  cpu% per process",
        ]
        for run in report["fold"]["runs"]:
            cpu = ", ".join(
                f"{name} {value:.0f}" for name, value in run["cpu"]["cpu_percent"].items()
            )
            label = f"{run['kind']} x{run['processes']}"
            per_batch = "-" if run["events_per_batch"] is None else f"{run['events_per_batch']:.0f}"
            rate, seconds = run["events_per_second"], run["seconds"]
            lines.append(f"  {label:<20} {rate:>8}  {seconds:>7.1f}  {per_batch:>12}  {cpu}")
        for processes, ratio in report["fold"]["ratios"].items():
            target = f"target >= {FOLD_RATIO_TARGET:.0%}"
            lines.append(
                f"  worker / floor, {processes} process(es): {ratio:.0%}"
                f" ({target}: {_verdict(ratio >= FOLD_RATIO_TARGET)})"
            )
    if report.get("freshness"):
        lines += _freshness_lines(report["freshness"])
    if report.get("state"):
        lines += state_lines(report["state"])
    memory = report.get("memory") or {}
    if memory:
        per_location = memory["redis_bytes_per_sku_location"]
        rss = memory["worker_rss_mib_per_100k_sku_locations"]
        lines += [
            "",
            "memory",
            f"  Redis bytes per SKU-location             {per_location}",
            f"  worker RSS MiB per 100,000 SKU-locations {rss}",
        ]
    if "push" in report:
        lines.append(bench_push.render(report["push"]))
    return "\n".join(lines)


def render_markdown(report: Mapping[str, Any]) -> str:
    return "# Benchmark summary\n\n```\n" + render_table(report) + "\n```\n"


def parse_args(argv: Sequence[str] | None) -> tuple[Params, Path, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a small workload (a smoke run)")
    parser.add_argument("--skus", type=int, default=10_000)
    parser.add_argument("--locations", type=int, default=20)
    parser.add_argument("--mix-events", type=int, default=100_000)
    parser.add_argument(
        "--popularity",
        choices=POPULARITIES,
        default="zipf",
        help="how the mix draws SKUs (loadtests.workload; default zipf)",
    )
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--workers", default="1,2", help="worker counts to measure (default 1,2)")
    parser.add_argument(
        "--worker-batch-bytes",
        type=int,
        default=WORKER_BATCH_BYTES,
        help="the worker's producer batch size (default: production's 16384; 1 is the"
        " development broker's setting for exact offsets on restart)",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fold-timeout", type=float, default=900.0)
    parser.add_argument(
        "--no-floor", action="store_true", help="measure the worker only (no ratio)"
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"what to measure, comma-separated (default: all of {','.join(SECTIONS)})",
    )
    parser.add_argument("--read-seconds", type=float, default=10.0, help="per wrk run")
    parser.add_argument("--read-rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--read-connections", type=int, default=16)
    parser.add_argument("--freshness-seconds", type=float, default=30.0, help="per rate")
    parser.add_argument(
        "--freshness-rates",
        default=f"{FRESHNESS_TARGET_RATE:.0f},high",
        help="events/s of the freshness runs; 'high': the highest the fold sustains,"
        " tried at falling fractions of the one-worker backlog rate",
    )
    parser.add_argument("--probes-per-second", type=float, default=20.0)
    parser.add_argument(
        "--state-seconds", type=float, default=420.0, help="per run of the state section"
    )
    parser.add_argument("--state-rate", type=float, default=1000.0, help="events/s (state)")
    parser.add_argument(
        "--state-horizon", type=float, default=30.0, help="the short horizon, seconds (state)"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.skus, args.locations, args.mix_events = 500, 20, 10_000
        args.read_seconds, args.read_rounds, args.freshness_seconds = 3.0, 1, 8.0
        args.state_seconds, args.state_horizon = 60.0, 10.0
    sections = tuple(name.strip() for name in args.sections.split(",") if name.strip())
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        parser.error(f"--sections: choose from {','.join(SECTIONS)}, not {args.sections!r}")
    rates = tuple(r.strip() for r in args.freshness_rates.split(",") if r.strip())
    for rate in rates:
        if rate != "high" and not (rate.replace(".", "", 1).isdigit() and float(rate) > 0):
            parser.error(f"--freshness-rates: positive numbers or 'high', not {rate!r}")
    if "freshness" in sections and "fold" not in sections:
        parser.error("--sections: freshness is measured after the fold (add fold)")
    try:
        workers = tuple(sorted({int(n) for n in args.workers.split(",")}))
    except ValueError:
        parser.error(f"--workers: comma-separated counts, not {args.workers!r}")
    if not workers or min(workers) < 1 or 1 not in workers:
        parser.error("--workers must include 1")
    for name in ("skus", "mix_events", "partitions", "worker_batch_bytes", "read_rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.locations < 2:
        parser.error("--locations must be at least 2")
    params = Params(
        skus=args.skus,
        locations=args.locations,
        mix_events=args.mix_events,
        partitions=args.partitions,
        redis_url=args.redis_url,
        seed=args.seed,
        fold_timeout=args.fold_timeout,
        workers=workers,
        floor=not args.no_floor,
        worker_batch_bytes=args.worker_batch_bytes,
        sections=sections,
        read_seconds=args.read_seconds,
        read_rounds=args.read_rounds,
        read_connections=args.read_connections,
        freshness_seconds=args.freshness_seconds,
        freshness_rates=rates,
        popularity=args.popularity,
        probes_per_second=args.probes_per_second,
        state_seconds=args.state_seconds,
        state_rate=args.state_rate,
        state_horizon=args.state_horizon,
    )
    return params, args.output, args.keep_logs


def main(argv: Sequence[str] | None = None) -> int:
    params, output, keep_logs = parse_args(argv)

    def publish(report: dict[str, Any]) -> None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2) + "\n")
        output.with_suffix(".md").write_text(render_markdown(report))
        print(render_table(report), flush=True)
        log.info("results written to %s (and %s)", output, output.with_suffix(".md"))

    return run_cli("bench-", lambda log_dir: run(params, log_dir), keep_logs, publish)


if __name__ == "__main__":
    sys.exit(main())
