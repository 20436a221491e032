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

This module holds the phases and the command line. The catalogue is in
``bench_grpc_catalogue``, what the load processes do in ``bench_grpc_loads``, the
summaries and the table in ``bench_grpc_report``; the stack, the load processes'
plumbing, the CPU meter and the command-line frame are shared with the other
benchmarks (``bench_stack``, ``bench_processes``, ``bench_measure``, ``bench_cli``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import platform
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from aiokafka import AIOKafkaProducer

from dev.broker import DevBroker
from dev.processes import ENV_PREFIX
from dev.redis_server import ensure_redis
from infra.config import Settings
from infra.kafka import kafka_client_options
from infra.topics import create_topics
from loadtests.bench_cli import run_cli, write_report
from loadtests.bench_grpc_catalogue import (
    PRODUCER_LINGER_MS,
    PRODUCER_MAX_BATCH_BYTES,
    publish_catalogue,
    wait_catalogue,
)
from loadtests.bench_grpc_loads import (
    GetJob,
    GetResult,
    OnHandLog,
    ProduceJob,
    ProduceResult,
    TapJob,
    WatchJob,
    rfc3339_now,
    run_get_client,
    run_producer,
    run_redis_tap,
    run_watcher,
)
from loadtests.bench_grpc_report import (
    GET_P99_TARGET_MS,
    WATCH_P99_TARGET_MS,
    get_summary,
    latency_line,
    render_table,
    target_met,
    watch_summary,
)
from loadtests.bench_measure import CpuMeter, redis_pid
from loadtests.bench_processes import LoadProcess
from loadtests.bench_stack import (
    REPO_ROOT,
    Stack,
    bench_settings,
    free_port,
    read_counter,
    send_all,
    wait_serving,
    worker_statuses,
)
from loadtests.workload import location_name, sku_name

log = logging.getLogger("bench.grpc")

DEFAULT_OUTPUT: Final[Path] = REPO_ROOT / "bench-results" / "grpc.json"
# The worker batches as in production. The development stack makes it send one record
# per batch because this broker reports wrong end offsets after batched produce, which
# only matters when a table recovers from its changelog (shared notes
# "faust-on-tansu"); nothing restarts during a measurement. One-record batches cost
# the fold about 15% (``--worker-batch-bytes 1``).
WORKER_BATCH_BYTES: Final[int] = 16384
WATCH_SKU_LIMIT: Final[int] = 500  # WatchAvailability's maximum
COUNTER_FOLDED_SALES: Final[bytes] = b"folded:pos.sale"
COUNTER_FOLDED_BALANCES: Final[bytes] = b"folded:erp.balance"
# The worker adds its counters to Redis once a second; a change it folded reaches
# the watches well within this after its counter shows it.
DELIVERY_GRACE: Final[float] = 2.0


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
    log.info("phase a: %s", latency_line(report["get_idle"]["latency_ms"]))

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
    report["targets"]["watch_p99_met"] = target_met(
        report["watch"]["latency_ms"], WATCH_P99_TARGET_MS
    )
    report["targets"]["get_idle_p99_met"] = target_met(
        report["get_idle"]["latency_ms"], GET_P99_TARGET_MS
    )
    report["targets"]["get_under_load_p99_met"] = target_met(
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


def main(argv: Sequence[str] | None = None) -> int:
    params, output, keep_logs = parse_args(argv)

    def publish(report: dict[str, Any]) -> None:
        write_report(output, report, render_table)

    return run_cli("bench-grpc-", lambda log_dir: run(params, log_dir), keep_logs, publish)


if __name__ == "__main__":
    # Run the module under its import name, not as __main__: the load processes
    # (spawned) then find its functions and classes by that name when unpickling.
    from loadtests.bench_grpc import main as main_of_module

    sys.exit(main_of_module())
