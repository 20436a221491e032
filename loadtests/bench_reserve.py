"""``python -m loadtests.bench_reserve`` (``make bench-reserve``; section ``reserve`` of
``make bench``): the reserve endpoint's throughput and latency.

Against a real stack started here: a development broker (Tansu) on a free port,
Redis (the one at ``--redis-url``, started if none answers) and the HTTP API in one
process (``python -m services.http``), called over HTTP with the run's API key (every
scope) as a bearer token. ``--skus`` SKUs x ``--locations`` locations of serving
records with 1,000,000 units each, written straight to Redis: every reserve is
placed (201), never a 409. There is no worker: a hold stays in Redis as it does
until the worker hands it over (at most a few per SKU by the end of the run). Each
reserve run gets a new, empty broker (the development broker slows down, and stalls
for seconds, the more records it holds): the API is restarted on it, same port and
keys.

1. **Highest throughput, closed loop**: ``wrk`` (one thread, ``--connections``
   connections, each with one request in flight) for ``--seconds``:
   ``POST /v1/reservations`` of a cart of one unit of a random SKU, without a location
   (the service reads the SKU's figures and holds and places the line), a new
   reservation id per request; then, in the same run, the single read
   (``GET /v1/availability/{sku}``, a random SKU) the same way. ``--rounds``
   interleaved rounds; the throughput is their mean. Answers other than 2xx are
   counted (``wrk`` does not tell them apart); more than half of them fails the run.
2. **Latency at half that throughput, open loop**: a load process (aiohttp) sends
   reserve requests on a fixed schedule, request n at start + n / rate, whatever the
   answers, for ``--open-seconds``. The latency is from the request's scheduled
   moment to its answer, so a sender that falls behind counts against the service
   (no coordinated omission). Target: p99 <= 20 ms. A 503 (the broker did not
   acknowledge within the publish timeout: nothing held) or no answer within 10 s is
   counted and reported, and is in the latency at its time (no answer: last); any
   other answer than 201 fails the run.

Writes a table to stdout and JSON to ``--output`` (default
``bench-results/reserve.json``). Everything it started is stopped on exit, and its
Redis keys are deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from dev.broker import DevBroker
from dev.redis_server import ensure_redis
from infra.config import Settings
from infra.topics import create_topics
from loadtests.bench_cli import BenchError, run_cli, write_report
from loadtests.bench_measure import CpuMeter, redis_pid, summarize_ms
from loadtests.bench_stack import Service, Stack, bench_settings, delete_keys, free_port
from loadtests.credentials import bearer
from loadtests.http_load import (
    LoadRun,
    OpenLoopJob,
    OpenLoopResult,
    run_open_loop,
    run_wrk,
)
from loadtests.server_latency import PHASE_METRIC, duration_buckets, histograms, summarize_buckets
from loadtests.serving import fresh_broker, seed_serving, stop_services_since, wait_http
from loadtests.workload import sku_name
from services.reservations.metrics import PHASES as PHASE_ORDER

log = logging.getLogger("bench")

REPO_ROOT: Final[Path] = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT: Final[Path] = REPO_ROOT / "bench-results" / "reserve.json"
RESERVE_P99_TARGET_MS: Final[float] = 20.0
#: The reserve route as the HTTP metrics label it, and the buckets the table shows.
RESERVE_ROUTE: Final[str] = "/v1/reservations"
SHOWN: Final[frozenset[str]] = frozenset({"10", "25", "50"})
#: Open-loop answers that do not fail the run: 201, and 503 or no answer when the
#: broker does not acknowledge in time (the development broker stalls for seconds now
#: and then). They are counted, and in the latency at their time (no answer: last).
ACCEPTED_OUTCOMES: Final[frozenset[str]] = frozenset(
    {"201", "503", "TimeoutError", "ServerTimeoutError"}
)


@dataclass(frozen=True)
class Params:
    skus: int
    locations: int
    connections: int
    seconds: float
    rounds: int
    open_seconds: float
    redis_url: str
    partitions: int
    seed: int


def _closed_loop(url: str, kind: str, params: Params, authorization: str, **extra: Any) -> LoadRun:
    run = run_wrk(
        url,
        kind=kind,
        skus=params.skus,
        connections=params.connections,
        seconds=params.seconds,
        seed=params.seed,
        authorization=authorization,
        **extra,
    )
    if run.errors > run.requests / 2:
        raise BenchError(f"{kind}: {run.errors} of {run.requests} requests failed")
    return run


def _finite(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary with ``inf`` (unanswered requests) shown as ``None`` (JSON null)."""
    return {
        k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in summary.items()
    }


def _mean_of(runs: Sequence[LoadRun]) -> dict[str, Any]:
    return {
        "runs": [r.summary() for r in runs],
        "errors": sum(r.errors for r in runs),
        "requests_per_second": round(sum(r.rate for r in runs) / len(runs)),
        "p50_ms": round(max(r.p50_ms for r in runs), 3),
        "p99_ms": round(max(r.p99_ms for r in runs), 3),
    }


def measure(stack: Stack, params: Params) -> dict[str, Any]:
    """The reserve endpoint's closed-loop throughput beside the single read's, then its
    open-loop latency at half that throughput (module docstring)."""
    assert stack.broker is not None
    data_root = Path(tempfile.mkdtemp(prefix="reserve-", dir=stack.log_dir))
    settings = bench_settings(
        stack.broker.url, params.redis_url, data_root, params.partitions, None
    )
    stack.settings = settings
    already_running = len(stack.services)
    run_id = uuid.uuid4().hex[:8]
    try:
        asyncio.run(create_topics(settings))
        asyncio.run(seed_serving(settings, params.skus, params.locations))
        server = stack.start_service("http-reserve", "services.http", settings)
        url = f"http://127.0.0.1:{settings.http_port}"
        authorization = bearer(settings.token.get_secret_value())
        wait_http(f"{url}/v1/availability/{sku_name(0)}", stack, authorization=authorization)
        for kind in ("reserve", "single"):  # warm up
            run_wrk(
                url,
                kind=kind,
                skus=params.skus,
                connections=4,
                seconds=2,
                seed=0,
                authorization=authorization,
                prefix=f"{run_id}-warm",
            )
        reserves: list[LoadRun] = []
        reads: list[LoadRun] = []
        redis = redis_pid(params.redis_url)
        cpu: dict[str, Any] = {}

        def meter_pids() -> dict[str, int]:
            pids = {"server": server.proc.pid, "redis": redis}
            return {name: pid for name, pid in pids.items() if pid is not None}

        for round_ in range(params.rounds):
            if round_:
                settings, server = restart_on_fresh_broker(stack, settings, already_running)
                run_wrk(
                    url,
                    kind="reserve",
                    skus=params.skus,
                    connections=4,
                    seconds=2,
                    seed=round_,
                    authorization=authorization,
                    prefix=f"{run_id}-warm{round_}",
                )
            meter = CpuMeter(meter_pids())
            meter.start()
            reserves.append(
                _closed_loop(url, "reserve", params, authorization, prefix=f"{run_id}-c{round_}")
            )
            cpu.setdefault("reserve_closed_loop", []).append(meter.stop()["cpu_percent"])
            stack.check_alive()
            reads.append(_closed_loop(url, "single", params, authorization))
            log_round(round_, reserves[-1], reads[-1])
        closed = {"reserve": _mean_of(reserves), "single_read": _mean_of(reads)}
        rate = closed["reserve"]["requests_per_second"] / 2
        job = OpenLoopJob(
            url, authorization, params.skus, rate, params.open_seconds, params.seed, f"{run_id}-o"
        )
        settings, server = restart_on_fresh_broker(stack, settings, already_running)
        load = stack.start_load("reserve-open-loop", run_open_loop, job)
        try:
            load.expect("ready", 60)
            meter = CpuMeter({**meter_pids(), "load": load.process.pid or 0})
            meter.start()
            served_before = duration_buckets(url, authorization, "POST", RESERVE_ROUTE)
            phases_before = histograms(url, authorization, PHASE_METRIC, "phase", api="http")
            load.send("go", time.time() + 0.5)
            result: OpenLoopResult = load.expect("result", params.open_seconds + 120)
            cpu["reserve_open_loop"] = meter.stop()
            in_service = summarize_buckets(
                served_before, duration_buckets(url, authorization, "POST", RESERVE_ROUTE)
            )
            phases_after = histograms(url, authorization, PHASE_METRIC, "phase", api="http")
            in_service["phases"] = {
                phase: summarize_buckets(phases_before.get(phase, {}), buckets)
                for phase, buckets in phases_after.items()
            }
        finally:
            load.stop()
            stack.loads.remove(load)
        stack.check_alive()
        bad = {s: n for s, n in result.statuses.items() if s not in ACCEPTED_OUTCOMES}
        if bad:
            raise BenchError(
                f"open loop: answers other than 201: {bad}; the first: {result.failures}"
            )
        open_loop = {
            "target_requests_per_second": round(rate, 1),
            "requests": result.sent,
            "requests_per_second": round(result.sent / max(result.seconds, 1e-9), 1),
            "answers": result.statuses,
            "not_placed": sum(n for s, n in result.statuses.items() if s != "201"),
            "first_not_placed": result.failures,
            # every request: a 503 at its time, an unanswered one as infinitely late
            "latency_ms": _finite(summarize_ms(list(result.latencies))),
            "service_time_ms": _finite(
                summarize_ms([x for x in result.service_times if not math.isnan(x)])
            ),
            "max_behind_schedule_ms": round(result.max_behind_schedule * 1000, 3),
            # the API's own request-duration histogram (loadtests.server_latency)
            "in_service": in_service,
            "load_process_cpu_seconds": round(result.cpu_seconds, 2),
        }
        p99 = open_loop["latency_ms"]["p99"]
        return {
            "skus": params.skus,
            "locations": params.locations,
            "connections": params.connections,
            "closed_loop": closed,
            "open_loop_at_half": open_loop,
            "p99_target_ms": RESERVE_P99_TARGET_MS,
            "p99_met": p99 is not None and p99 <= RESERVE_P99_TARGET_MS,
            "cpu_percent": cpu,
        }
    finally:
        stop_services_since(stack, already_running)
        stack.settings = None
        delete_keys(settings)


def restart_on_fresh_broker(
    stack: Stack, settings: Settings, already_running: int
) -> tuple[Settings, Service]:
    """The HTTP API again, on a new, empty development broker (``fresh_broker``: it
    slows down, and stalls for seconds, the more records it holds) and on the same
    port and Redis keys."""
    stop_services_since(stack, already_running)
    fresh_broker(stack)
    assert stack.broker is not None
    settings = settings.model_copy(update={"broker": stack.broker.url})
    stack.settings = settings
    asyncio.run(create_topics(settings))
    server = stack.start_service("http-reserve", "services.http", settings)
    wait_http(
        f"http://127.0.0.1:{settings.http_port}/v1/availability/{sku_name(0)}",
        stack,
        authorization=bearer(settings.token.get_secret_value()),
    )
    return settings, server


def log_round(round_: int, reserve: LoadRun, read: LoadRun) -> None:
    log.info(
        "round %d: reserve %.0f req/s (p99 %.2f ms), single read %.0f req/s (p99 %.2f ms)",
        round_ + 1,
        reserve.rate,
        reserve.p99_ms,
        read.rate,
        read.p99_ms,
    )


def render(report: Mapping[str, Any]) -> str:
    closed, half = report["closed_loop"], report["open_loop_at_half"]
    reserve, read = closed["reserve"], closed["single_read"]
    latency, service = half["latency_ms"], half["service_time_ms"]
    verdict = "met" if report["p99_met"] else "MISSED"
    return "\n".join(
        [
            "",
            f"reserve (POST /v1/reservations, one line, no location; {report['skus']} SKUs x"
            f" {report['locations']} locations, {report['connections']} connections)",
            f"  highest throughput, closed loop   reserve {reserve['requests_per_second']} req/s"
            f" (p50 {reserve['p50_ms']} ms, p99 {reserve['p99_ms']} ms)",
            f"  same run, single read             {read['requests_per_second']} req/s"
            f" (p50 {read['p50_ms']} ms, p99 {read['p99_ms']} ms)",
            f"  open loop at half ({half['target_requests_per_second']:.0f} req/s, got"
            f" {half['requests_per_second']:.0f}): p50 {latency['p50']} ms, p99"
            f" {latency['p99']} ms, max {latency['max']} ms (target p99 <="
            f" {report['p99_target_ms']:g} ms: {verdict})",
            f"    from the actual send: p50 {service['p50']} ms, p99 {service['p99']} ms;"
            f" sender at most {half['max_behind_schedule_ms']} ms behind schedule",
            f"    in the service (its histogram): p99 at most {_bound(half['in_service'])};"
            f" {_shares(half['in_service'])}",
            f"    its steps, p99 at most: {_phases(half['in_service'])}",
            f"    not placed: {half.get('not_placed', 0)} of {half.get('requests', '?')}"
            f" ({_outcomes(half.get('answers', {}))}); closed-loop errors: reserve"
            f" {reserve.get('errors', 0)}, read {read.get('errors', 0)}",
        ]
    )


def _bound(in_service: Mapping[str, Any]) -> str:
    bound = in_service["p99_at_most_ms"]
    return "beyond the last bucket" if bound is None else f"{bound:g} ms"


def _phases(in_service: Mapping[str, Any]) -> str:
    phases = in_service.get("phases", {})
    return ", ".join(f"{name} {_bound(phases[name])}" for name in PHASE_ORDER if name in phases)


def _shares(in_service: Mapping[str, Any]) -> str:
    within = in_service["within_ms"]
    return ", ".join(f"{share:g}% within {ms} ms" for ms, share in within.items() if ms in SHOWN)


def _outcomes(answers: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(answers.items())) or "none"


def from_bench(params: Any) -> Params:
    """This section's parameters within ``make bench`` (``loadtests.bench_params.Params``):
    its SKUs, locations, Redis and partitions; short runs with ``--quick``."""
    quick = params.skus < 10_000
    return Params(
        skus=params.skus,
        locations=params.locations,
        connections=params.read_connections,
        seconds=params.read_seconds,
        rounds=params.read_rounds,
        open_seconds=5.0 if quick else 20.0,
        redis_url=params.redis_url,
        partitions=params.partitions,
        seed=params.seed,
    )


def run(params: Params, log_dir: Path) -> dict[str, Any]:
    report: dict[str, Any] = {
        "benchmark": "reserve",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_before": [round(v, 2) for v in os.getloadavg()],
        },
        "parameters": asdict(params),
    }
    stack = Stack(log_dir)
    try:
        stack.broker = DevBroker(free_port(), stack.log_dir).start()
        stack.redis_proc = ensure_redis(params.redis_url, stack.log_dir)
        report["reserve"] = measure(stack, params)
    finally:
        stack.shutdown()
    report["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    return report


def parse_args(argv: Sequence[str] | None) -> tuple[Params, Path, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench_reserve", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke run)")
    parser.add_argument("--skus", type=int, default=10_000)
    parser.add_argument("--locations", type=int, default=20)
    parser.add_argument("--connections", type=int, default=16, help="closed loop (wrk)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per closed-loop run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved closed-loop rounds")
    parser.add_argument("--open-seconds", type=float, default=20.0, help="the open-loop run")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.skus, args.seconds, args.rounds, args.open_seconds = 1_000, 3.0, 1, 5.0
    for name in ("skus", "locations", "connections", "rounds", "partitions"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.seconds <= 0 or args.open_seconds <= 0:
        parser.error("--seconds and --open-seconds must be positive")
    params = Params(
        skus=args.skus,
        locations=args.locations,
        connections=args.connections,
        seconds=args.seconds,
        rounds=args.rounds,
        open_seconds=args.open_seconds,
        redis_url=args.redis_url,
        partitions=args.partitions,
        seed=args.seed,
    )
    return params, args.output, args.keep_logs


def main(argv: Sequence[str] | None = None) -> int:
    params, output, keep_logs = parse_args(argv)
    return run_cli(
        "bench-reserve-",
        lambda log_dir: run(params, log_dir),
        keep_logs,
        lambda report: write_report(output, report, lambda r: render(r["reserve"])),
    )


if __name__ == "__main__":
    sys.exit(main())
