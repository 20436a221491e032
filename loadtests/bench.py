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

**Reserve** (``loadtests.bench_reserve``; alone: ``make bench-reserve``): the
reserve endpoint's highest throughput beside the single read's, then its latency at
half of it.

**State** (``loadtests.bench_state``): the worker's memory over a long
reservation-heavy run, with a short state horizon and with the default one.

Writes a table to stdout and JSON to ``--output`` (default ``bench-results/bench.json``)
with a markdown summary beside it; logs progress to stderr. Everything it started
is stopped on exit (also on Ctrl-C or failure), and its Redis keys are deleted.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from dev.broker import DevBroker
from dev.redis_server import ensure_redis
from infra.config import Settings
from loadtests import bench_push, bench_reserve
from loadtests.bench_cli import run_cli, write_report
from loadtests.bench_fold import (
    FoldRun,
    highest_sustained,
    measure_fold,
    measure_freshness,
    measure_memory,
    wait_caught_up,
)
from loadtests.bench_grpc import WORKER_BATCH_BYTES
from loadtests.bench_params import (
    DEFAULT_OUTPUT,
    FOLD_RATIO_TARGET,
    FRESHNESS_P99_TARGET_MS,
    FRESHNESS_TARGET_RATE,
    READ_P99_TARGET_MS,
    READ_RATIO_TARGET,
    SECTIONS,
    Params,
)
from loadtests.bench_reads import measure_reads
from loadtests.bench_report import render_markdown, render_table
from loadtests.bench_stack import Service, Stack, free_port
from loadtests.bench_state import StateParams, measure_state_memory
from loadtests.credentials import bearer
from loadtests.serving import fresh_broker, wait_http
from loadtests.workload import POPULARITIES, sku_name

log = logging.getLogger("bench")


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
        if "reserve" in params.sections:  # loadtests.bench_reserve
            report["reserve"] = bench_reserve.measure(stack, bench_reserve.from_bench(params))
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
        write_report(output, report, render_table, render_markdown)

    return run_cli("bench-", lambda log_dir: run(params, log_dir), keep_logs, publish)


if __name__ == "__main__":
    sys.exit(main())
