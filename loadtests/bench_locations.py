"""``python -m loadtests.bench_locations`` (``make bench-locations``): what one sold
unit costs as a SKU is stocked at more locations.

For each location count N (``--locations``, default 20, 200 and 1,000; rounds
interleaved with ``--rounds``), on a fresh development broker and a Redis server of
its own (a fresh ``redis-server`` on a free port, so that its traffic counters count
this benchmark alone):

1. ``--skus`` SKUs stocked at N locations each: one ERP balance per SKU and location,
   folded by the real worker (``python -m streams``, one process);
2. an idle interval (``--idle-seconds``): the worker's CPU and the Redis traffic
   with nothing to fold (heartbeats, status reports, polls), per second;
3. single-unit ``pos.sale`` events at ``--rate`` events/s for ``--seconds`` (event n
   at SKU n mod skus, and the next location of that SKU each time round), until the
   worker has folded them all and published every change.

Per event, over the sales (less the idle interval's rate for as long as they took):
the worker's CPU (``/proc/PID/stat``), the bytes Redis took in
(``total_net_input_bytes``: the worker's writes) and sent out
(``total_net_output_bytes``: replies and the pub/sub messages), the change feed's
bytes (key and value of its records on ``availability.changes``) and the bytes a
subscriber of the SKUs' change channels receives, as a Watch server does.

The target (issue "Serving records that scale with the store count"): the fold's
cost and the Redis bytes written per event at 1,000 locations within 2x of those at
20. The benchmark prints the ratios and whether each is met; it does not fail on
them.

Writes a table to stdout and JSON to ``--output`` (default
``bench-results/bench-locations.json``); logs progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import redis

from dev.redis_server import ensure_redis
from infra.topics import create_topics
from loadtests.bench_cli import BenchError, run_cli, write_report
from loadtests.bench_fold import publish
from loadtests.bench_grpc_loads import ProduceJob, ProduceResult, run_producer
from loadtests.bench_locations_probe import (
    ChannelCount,
    ChannelJob,
    Snapshot,
    feed_bytes_since,
    run_channel_meter,
    snapshot,
    wait_settled,
)
from loadtests.bench_params import LOAD_BATCH_BYTES, PRODUCER_LINGER_MS, REPO_ROOT
from loadtests.bench_stack import Stack, bench_settings, delete_keys, free_port
from loadtests.serving import fresh_broker, stop_services_since
from loadtests.workload import catalogue

log = logging.getLogger("bench")

DEFAULT_OUTPUT: Final[Path] = REPO_ROOT / "bench-results" / "bench-locations.json"
#: The issue's target: per event at the most locations within this factor of the fewest.
RATIO_TARGET: Final[float] = 2.0
PARTITIONS: Final[int] = 4
#: Per-event figures; the first two are the target's.
FIGURES: Final[tuple[str, ...]] = (
    "worker_cpu_us",
    "redis_input_bytes",
    "redis_output_bytes",
    "feed_bytes",
    "channel_bytes",
)
TARGETED: Final[tuple[str, ...]] = ("worker_cpu_us", "redis_input_bytes")


def per_event(sales: Mapping[str, float], idle: Mapping[str, float], events: int) -> dict[str, Any]:
    """The sales interval's figures per event, less what the worker and Redis do
    without events (the idle interval's rate over the sales interval's length)."""
    scale = sales["seconds"] / idle["seconds"]

    def net(name: str) -> float:
        return (sales[name] - idle[name] * scale) / events

    return {
        "worker_cpu_us": round(net("worker_cpu_seconds") * 1e6, 1),
        "worker_cpu_us_gross": round(sales["worker_cpu_seconds"] / events * 1e6, 1),
        "redis_input_bytes": round(net("redis_input_bytes")),
        "redis_input_bytes_gross": round(sales["redis_input_bytes"] / events),
        "redis_output_bytes": round(net("redis_output_bytes")),
        "serving_writes": round(sales["serving_writes"] / events, 3),
        "fold_batches": round(sales["batches"] / events, 3),
        "feed_records": round(sales["feed_published"] / events, 3),
    }


def measure(
    stack: Stack, args: argparse.Namespace, redis_url: str, locations: int
) -> dict[str, Any]:
    """One location count: seed, fold, idle, sales; the figures per event."""
    fresh_broker(stack)
    assert stack.broker is not None
    data_dir = Path(tempfile.mkdtemp(prefix=f"n{locations}-", dir=stack.log_dir))
    settings = bench_settings(stack.broker.url, redis_url, data_dir, PARTITIONS, None)
    stack.settings = settings  # its keys are deleted on shutdown
    asyncio.run(create_topics(settings))
    run_id = settings.topic_prefix.rstrip(".")
    already_running = len(stack.services)
    client = redis.Redis.from_url(redis_url)
    loads = []
    try:
        seeded = asyncio.run(publish(settings, catalogue(run_id, args.skus, locations)))
        worker = stack.start_service(f"worker-n{locations}", "streams", settings)
        started = time.monotonic()
        wait_settled(client, settings, seeded, stack.check_alive, args.timeout)
        seed_seconds = time.monotonic() - started
        log.info("N=%d: %d balances folded in %.1f s", locations, seeded, seed_seconds)
        record_bytes = client.memory_usage(f"{settings.redis_key_prefix}:sku:{{SKU-000000}}")
        meter = stack.start_load(
            "channels",
            run_channel_meter,
            ChannelJob(redis_url, settings.redis_key_prefix, args.skus),
        )
        producer = stack.start_load(
            "producer",
            run_producer,
            ProduceJob(
                settings=settings,
                topic=settings.pos_topic,
                skus=args.skus,
                locations=locations,
                rate=args.rate,
                duration=args.seconds,
                run_id=run_id,
                max_batch_bytes=LOAD_BATCH_BYTES,
                linger_ms=PRODUCER_LINGER_MS,
            ),
        )
        loads = [meter, producer]
        meter.expect("ready", 60)
        producer.expect("ready", 60)
        pid = worker.proc.pid
        idle_start = snapshot(client, settings, pid)
        time.sleep(args.idle_seconds)
        sales_start = snapshot(client, settings, pid)
        idle = sales_start.minus(idle_start)
        go = time.time() + 0.2
        producer.send("go", go)
        produced: ProduceResult = producer.expect("result", args.seconds + 60)
        if produced.errors:
            raise BenchError(f"{produced.errors} sales were not acknowledged by the broker")
        events = len(produced.publish_times)
        wait_settled(client, settings, seeded + events, stack.check_alive, args.timeout)
        sales_end: Snapshot = snapshot(client, settings, pid)
        meter.send("stop")
        channels: ChannelCount = meter.expect("result", 30)
        sales = sales_end.minus(sales_start)
        feed_records, feed_bytes = feed_bytes_since(settings, go)
        figures = per_event(sales, idle, events)
        figures["feed_bytes"] = round(feed_bytes / events)
        figures["channel_bytes"] = round(channels.bytes / events)
        figures["channel_messages"] = round(channels.messages / events, 3)
        return {
            "locations": locations,
            "skus": args.skus,
            "events": events,
            "seed_events": seeded,
            "seed_seconds": round(seed_seconds, 1),
            "record_memory_bytes": record_bytes,
            "producer_max_behind_schedule_ms": round(produced.max_behind_schedule * 1000, 1),
            "feed_records_read": feed_records,
            "idle": {k: round(v, 3) for k, v in idle.items()},
            "sales": {k: round(v, 3) for k, v in sales.items()},
            "per_event": figures,
        }
    finally:
        for load in loads:
            load.stop()
            stack.loads.remove(load)
        stop_services_since(stack, already_running)
        client.close()
        delete_keys(settings)
        stack.settings = None


def summarize(runs: Sequence[Mapping[str, Any]], locations: Sequence[int]) -> dict[str, Any]:
    """Per location count, the median over its rounds of each per-event figure; the
    ratios of the most locations to the fewest, against the target."""
    by_n: dict[str, dict[str, float]] = {}
    for n in locations:
        mine = [run["per_event"] for run in runs if run["locations"] == n]
        by_n[str(n)] = {
            name: round(statistics.median(figures[name] for figures in mine), 1) for name in mine[0]
        }
    fewest, most = by_n[str(min(locations))], by_n[str(max(locations))]
    ratios: dict[str, Any] = {}
    for name in FIGURES:
        ratio = most[name] / fewest[name] if fewest[name] > 0 else math.inf
        ratios[name] = {
            "ratio": round(ratio, 2),
            "target": RATIO_TARGET if name in TARGETED else None,
            "met": ratio <= RATIO_TARGET if name in TARGETED else None,
        }
    return {"per_event": by_n, "ratios": ratios}


def run(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    report: dict[str, Any] = {
        "benchmark": "locations",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_before": [round(v, 2) for v in os.getloadavg()],
        },
        "parameters": {
            "locations": args.locations,
            "skus": args.skus,
            "rate": args.rate,
            "seconds": args.seconds,
            "idle_seconds": args.idle_seconds,
            "rounds": args.rounds,
        },
    }
    stack = Stack(log_dir)
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    try:
        stack.redis_proc = ensure_redis(redis_url, log_dir)
        if stack.redis_proc is None:
            raise BenchError(f"something already answers at {redis_url}")
        runs = []
        for round_ in range(args.rounds):
            for n in args.locations:
                measured = measure(stack, args, redis_url, n)
                measured["round"] = round_
                log.info("N=%d: %s", n, measured["per_event"])
                runs.append(measured)
        report["runs"] = runs
        report.update(summarize(runs, args.locations))
    finally:
        stack.shutdown()
    report["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    return report


def render_table(report: Mapping[str, Any]) -> str:
    params = report["parameters"]
    lines = [
        f"One sold unit at N locations: {params['skus']} SKUs, single-unit sales at"
        f" {params['rate']:g}/s for {params['seconds']:g} s, {params['rounds']} round(s)"
        " (medians); per event, net of the idle worker and Redis",
        "| N | events | worker CPU us | Redis bytes in | Redis bytes out | feed bytes"
        " | channel bytes | records written | fold batches | record in Redis, bytes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in params["locations"]:
        runs = [r for r in report["runs"] if r["locations"] == n]
        events = sum(r["events"] for r in runs)
        record = max(r["record_memory_bytes"] or 0 for r in runs)
        f = report["per_event"][str(n)]
        lines.append(
            f"| {n:,} | {events:,} | {f['worker_cpu_us']:,.0f} | {f['redis_input_bytes']:,.0f}"
            f" | {f['redis_output_bytes']:,.0f} | {f['feed_bytes']:,.0f}"
            f" | {f['channel_bytes']:,.0f} | {f['serving_writes']:g} | {f['fold_batches']:g}"
            f" | {record:,} |"
        )
    most, fewest = max(params["locations"]), min(params["locations"])
    lines.append("")
    lines.append(f"N={most:,} over N={fewest:,} (target: within {RATIO_TARGET:g}x)")
    for name in FIGURES:
        ratio = report["ratios"][name]
        verdict = "" if ratio["met"] is None else ("  met" if ratio["met"] else "  missed")
        lines.append(f"  {name:<20} {ratio['ratio']:>8,.2f}x{verdict}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench_locations",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a short run (a smoke test)")
    parser.add_argument(
        "--locations",
        type=lambda text: [int(v) for v in text.split(",")],
        default=[20, 200, 1000],
        help="location counts, comma-separated (default 20,200,1000)",
    )
    parser.add_argument("--skus", type=int, default=20, help="SKUs, each at every location")
    parser.add_argument("--rate", type=float, default=50.0, help="sales per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of sales")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds over the location counts, interleaved"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to fold a phase")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results file")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.skus, args.seconds, args.idle_seconds, args.rounds = 10, 8.0, 3.0, 1
    if len(args.locations) < 2 or min(args.locations) < 1:
        parser.error("--locations needs at least two counts, each at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli(
        "bench-locations-",
        lambda log_dir: run(args, log_dir),
        args.keep_logs,
        lambda report: write_report(args.output, report, render_table),
    )


if __name__ == "__main__":
    sys.exit(main())
