"""The fold's measurements in ``python -m loadtests.bench``: the workload published
to fresh topics, the floor or the worker timed through it (``measure_fold``), the
memory the folded workload takes, and freshness (publish -> visible over HTTP) at a
rate, down to the highest rate the fold sustains."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis
from aiokafka import AIOKafkaProducer

from dev.sample_data import topic_for
from infra.config import Settings
from infra.kafka import kafka_client_options
from infra.topics import create_topics
from loadtests.bench_cli import BenchError
from loadtests.bench_grpc_loads import ProduceJob, ProduceResult, run_producer
from loadtests.bench_measure import CpuMeter, redis_pid, rss_bytes, summarize_ms
from loadtests.bench_params import (
    HIGH_RATE_FRACTIONS,
    LOAD_BATCH_BYTES,
    MEMORY_SAMPLE,
    POLL_INTERVAL,
    PRODUCER_LINGER_MS,
    SUSTAINED_P99_MS,
    Params,
)
from loadtests.bench_stack import (
    Service,
    Stack,
    bench_settings,
    delete_keys,
    folded_count,
    send_all,
)
from loadtests.credentials import bearer
from loadtests.floor_agent import FLOOR_FIELD, floor_key
from loadtests.http_load import ProbeJob, ProbeResult, run_http_prober
from loadtests.serving import stop_services_since
from loadtests.workload import Event, catalogue, event_mix

log = logging.getLogger("bench")


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
    return await send_all(producer, lambda event: topic_for(settings, event["type"]), events)


# --------------------------------------------------------------------------- counting


def decoded_count(client: redis.Redis, settings: Settings) -> int:
    value = client.hget(floor_key(settings.redis_key_prefix), FLOOR_FIELD)
    return int(value) if value is not None else 0


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
            settings=settings,
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
            authorization=bearer(settings.token.get_secret_value()),
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
