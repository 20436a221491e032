"""``python -m loadtests.bench_sizing`` (``make bench-sizing``): the per-unit figures
that README "Sizing" plans from, at several locations per SKU (20, 200, 500 by
default), with the same number of SKU-locations at each:

- **worker state** per SKU-location: the SKU states that ERP balances of every
  SKU-location fold into (the worker's table holds them in memory), measured with
  ``tracemalloc`` in this process (and, before that, untraced, what the process's
  resident memory grew by); then one sale per SKU-location on top (an on-hand
  delta, kept until a later balance contains it); the journal's summary record (the
  changelog's bytes per SKU) and the time to fold the journal back (a worker taking
  over a partition);
- **a changed SKU's record**: the CPU the worker spends computing and encoding the
  serving record of a SKU whose figures changed (every location: the record is
  rebuilt whole), and the bytes of the record and of its change-feed record;
- **Redis** per SKU-location: ``MEMORY USAGE`` of a sample of serving records as the
  worker writes them, and the sizes of the record's canonical figures and of an
  answer;
- **reads** at each size: HTTP single reads of a random SKU (every location in the
  answer) with ``wrk``, and gRPC ``GetAvailability`` narrowed to one location (a
  store's till) with ``h2load``, one API process per size, the sizes interleaved.

A development broker (Tansu) is started for the APIs; Redis is the one at
``--redis-url`` (started if none answers). Writes JSON to ``--output`` and a table
to stdout; its Redis keys are deleted after.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import multiprocessing
import os
import random
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis

from availability.ats import location_availability
from availability.events import parse_event
from availability.journal import restore, summary_value
from availability.rules import RuleBook
from availability.state import SkuState, fold
from dev.broker import DevBroker
from dev.redis_server import ensure_redis
from infra.config import Settings
from infra.feed_record import location_record
from infra.records import encode_partial
from infra.topics import create_topics
from loadtests.bench_cli import BenchError, run_cli, write_report
from loadtests.bench_measure import CpuMeter, rss_bytes
from loadtests.bench_params import GRPC_GET_METHOD, REPO_ROOT
from loadtests.bench_reads import grpc_answer
from loadtests.bench_stack import Service, Stack, bench_settings, delete_keys, free_port
from loadtests.credentials import bearer
from loadtests.http_load import LoadRun, run_h2load_grpc, run_wrk
from loadtests.serving import seed_serving, wait_http
from loadtests.workload import catalogue, location_name, sku_name
from services.grpc.gen.availability.v1 import availability_pb2 as pb

log = logging.getLogger("bench")

DEFAULT_OUTPUT = REPO_ROOT / "bench-results" / "sizing.json"
REDIS_SAMPLE = 200  # serving records whose MEMORY USAGE is taken, per size
SALE_AT = "2026-01-02T00:00:00Z"  # after the balances: an on-hand delta


@dataclass(frozen=True)
class Params:
    locations: tuple[int, ...]
    sku_locations: int
    seconds: float
    rounds: int
    connections: int
    redis_url: str
    seed: int


def _skus(params: Params, locations: int) -> int:
    return max(1, params.sku_locations // locations)


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def _fold_catalogue(skus: int, locations: int) -> dict[str, SkuState]:
    states: dict[str, SkuState] = {}
    for raw in catalogue("size", skus, locations):
        event = parse_event(orjson.dumps(raw))
        state = states.get(event.sku)
        if state is None:
            state = states[event.sku] = SkuState(event.sku)
        fold(state, event)
    return states


def measure_state(skus: int, locations: int) -> dict[str, Any]:
    """The SKU states of ``skus`` x ``locations`` ERP balances, then a sale at each."""
    sku_locations = skus * locations
    # Resident memory first (no tracing): what the process's RSS grows by.
    gc.collect()
    rss_before = rss_bytes(os.getpid())
    states = _fold_catalogue(skus, locations)
    gc.collect()
    rss_growth = rss_bytes(os.getpid()) - rss_before
    del states
    gc.collect()
    tracemalloc.start()
    try:
        before = _traced()
        states = _fold_catalogue(skus, locations)
        balances = _traced() - before
        for i in range(skus):
            sku = sku_name(i)
            for j in range(locations):
                sale = {
                    "type": "pos.sale",
                    "event_id": f"size-sale-{i}-{j}",
                    "sku": sku,
                    "location_id": location_name(j),
                    "quantity": 1,
                    "occurred_at": SALE_AT,
                }
                fold(states[sku], parse_event(orjson.dumps(sale)))
        with_sales = _traced() - before
    finally:
        tracemalloc.stop()
    rules, now = RuleBook(), time.time_ns() // 1000
    record_bytes = feed_bytes = 0
    # A sold unit changes one location: the worker computes, writes and publishes it
    # alone (README "Serving layer").
    sold = {sku: state.locations()[:1] for sku, state in states.items()}
    started = time.perf_counter()
    for state in states.values():
        changed, _ = location_availability(state, rules, now, sold[state.sku])
        record_bytes += sum(len(arg) for arg in encode_partial(state.sku, changed).args)
    record_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for state in states.values():
        changed, _ = location_availability(state, rules, now, sold[state.sku])
        feed_bytes += sum(len(location_record(state.sku, loc, 1, now)) for loc in changed)
    feed_seconds = time.perf_counter() - started
    summaries = {sku: summary_value(state) for sku, state in states.items()}
    summary_bytes = sum(len(v) for v in summaries.values())
    restored: dict[str, SkuState] = {}
    started = time.perf_counter()
    for sku, value in summaries.items():
        restore(restored, sku, value)
    restore_seconds = time.perf_counter() - started
    if any(len(s.baselines) != locations for s in restored.values()):
        raise BenchError("the journal's summaries did not restore every location")
    return {
        "skus": skus,
        "sku_locations": sku_locations,
        "state_bytes_per_sku_location": round(balances / sku_locations, 1),
        "state_rss_bytes_per_sku_location": round(rss_growth / sku_locations, 1),
        "delta_bytes_per_sale": round((with_sales - balances) / sku_locations, 1),
        "journal_summary_bytes_per_sku_location": round(summary_bytes / sku_locations, 1),
        "restore_us_per_sku_location": round(restore_seconds / sku_locations * 1e6, 2),
        "record_build_us_per_sku": round(record_seconds / skus * 1e6, 1),
        "record_bytes_per_sku": round(record_bytes / skus),
        "feed_record_us_per_sku": round(feed_seconds / skus * 1e6, 1),
        "feed_record_bytes_per_sku": round(feed_bytes / skus),
    }


def measure_redis(settings: Settings, skus: int, locations: int, seed: int) -> dict[str, Any]:
    """Serving records as the worker writes them, then their size in Redis."""
    asyncio.run(seed_serving(settings, skus, locations))
    client = redis.Redis.from_url(settings.redis_url)
    try:
        sample = random.Random(seed).sample(range(skus), min(REDIS_SAMPLE, skus))
        keys = [f"{settings.redis_key_prefix}:sku:{{{sku_name(i)}}}" for i in sample]
        usage = [client.memory_usage(key, samples=0) or 0 for key in keys]
        # The answer fragments of a channel without a buffer (fields a:<location>).
        answers = [
            sum(len(value) for name, value in client.hgetall(key).items() if name[:2] == b"a:")
            for key in keys
        ]
        encoding = client.object("encoding", keys[0])
    finally:
        client.close()
    per_sku = sum(usage) / len(usage)
    return {
        "redis_bytes_per_sku": round(per_sku),
        "redis_bytes_per_sku_location": round(per_sku / locations, 1),
        "answer_bytes_per_sku": round(sum(answers) / len(answers)),
        "hash_encoding": encoding.decode() if isinstance(encoding, bytes) else str(encoding),
    }


@dataclass
class _Size:
    locations: int
    skus: int
    settings: Settings
    http: Service
    grpc: Service
    request: bytes


def _start_size(stack: Stack, params: Params, locations: int, log_dir: Path) -> _Size:
    assert stack.broker is not None
    data_dir = Path(tempfile.mkdtemp(prefix=f"size{locations}-", dir=log_dir))
    settings = bench_settings(stack.broker.url, params.redis_url, data_dir, 8, None)
    settings = settings.model_copy(update={"grpc_metrics_port": 0})
    asyncio.run(create_topics(settings))
    skus = _skus(params, locations)
    http = stack.start_service(f"http-{locations}", "services.http", settings)
    grpc_service = stack.start_service(f"grpc-{locations}", "services.grpc", settings)
    request = pb.GetAvailabilityRequest(
        sku=sku_name(skus // 2), location_id=location_name(locations // 2)
    ).SerializeToString()
    return _Size(locations, skus, settings, http, grpc_service, request)


def _read_runs(stack: Stack, params: Params, sizes: list[_Size]) -> dict[int, dict[str, Any]]:
    """Interleaved rounds: HTTP then gRPC reads of each size in turn."""
    runs: dict[int, dict[str, list[tuple[LoadRun, float]]]] = {
        s.locations: {"http": [], "grpc": []} for s in sizes
    }
    for round_ in range(params.rounds):
        for size in sizes:
            token = size.settings.token.get_secret_value()
            for kind, service in (("http", size.http), ("grpc", size.grpc)):
                meter = CpuMeter({"server": service.proc.pid})
                meter.start()
                if kind == "http":
                    result = run_wrk(
                        f"http://127.0.0.1:{size.settings.http_port}",
                        kind="single",
                        skus=size.skus,
                        connections=params.connections,
                        seconds=params.seconds,
                        seed=params.seed + round_,
                        authorization=bearer(token),
                    )
                else:
                    result = run_h2load_grpc(
                        f"127.0.0.1:{size.settings.grpc_port}",
                        GRPC_GET_METHOD,
                        size.request,
                        connections=params.connections,
                        seconds=params.seconds,
                        authorization=bearer(token),
                    )
                cpu = meter.stop()["cpu_percent"]["server"]
                if result.errors:
                    raise BenchError(
                        f"{kind} at {size.locations} locations: {result.errors} failed"
                    )
                log.info(
                    "%s read, %d locations: %.0f req/s, p99 %.2f ms, server %.0f%% of a core",
                    kind,
                    size.locations,
                    result.rate,
                    result.p99_ms,
                    cpu,
                )
                runs[size.locations][kind].append((result, cpu))
    return {
        locations: {
            kind: {
                "requests_per_second": round(sum(r.rate for r, _ in results) / len(results)),
                "rounds": [round(r.rate) for r, _ in results],
                "p99_ms": round(max(r.p99_ms for r, _ in results), 2),
                "server_cpu_percent": round(sum(c for _, c in results) / len(results)),
            }
            for kind, results in by_kind.items()
        }
        for locations, by_kind in runs.items()
    }


def run(params: Params, log_dir: Path) -> dict[str, Any]:
    report: dict[str, Any] = {
        "benchmark": "sizing",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "load_average_before": os.getloadavg()},
        "parameters": asdict(params),
        "sizes": {},
    }
    for locations in params.locations:
        # A process of its own per size: memory freed by one size would hide the next
        # one's growth of the resident memory.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
            state = pool.submit(measure_state, _skus(params, locations), locations).result()
        log.info("state, %d locations: %s", locations, state)
        report["sizes"][str(locations)] = {"state": state}
    stack = Stack(log_dir)
    sizes: list[_Size] = []
    try:
        stack.broker = DevBroker(free_port(), stack.log_dir).start()
        stack.redis_proc = ensure_redis(params.redis_url, stack.log_dir)
        for locations in params.locations:
            size = _start_size(stack, params, locations, log_dir)
            sizes.append(size)
            measured = measure_redis(size.settings, size.skus, locations, params.seed)
            log.info("redis, %d locations: %s", locations, measured)
            report["sizes"][str(locations)]["redis"] = measured
        for size in sizes:
            token = size.settings.token.get_secret_value()
            base = f"http://127.0.0.1:{size.settings.http_port}"
            wait_http(f"{base}/v1/availability/{sku_name(0)}", stack, authorization=bearer(token))
            answer = grpc_answer(f"127.0.0.1:{size.settings.grpc_port}", size.request, stack, token)
            report["sizes"][str(size.locations)]["grpc_answer_bytes"] = len(answer)
        for locations, reads in _read_runs(stack, params, sizes).items():
            report["sizes"][str(locations)]["reads"] = reads
    finally:
        for size in sizes:
            delete_keys(size.settings)
        stack.shutdown()
    report["load_average_after"] = os.getloadavg()
    return report


def render(report: Mapping[str, Any]) -> str:
    rows = [
        "| locations per SKU | " + " | ".join(str(n) for n in report["sizes"]) + " |",
        "|---" * (len(report["sizes"]) + 1) + "|",
    ]
    lines = (
        ("worker state, bytes per SKU-location", "state", "state_bytes_per_sku_location"),
        ("worker state, bytes per unfolded sale", "state", "delta_bytes_per_sale"),
        (
            "journal summary, bytes per SKU-location",
            "state",
            "journal_summary_bytes_per_sku_location",
        ),
        ("journal fold-back, us per SKU-location", "state", "restore_us_per_sku_location"),
        ("worker RSS growth, bytes per SKU-location", "state", "state_rss_bytes_per_sku_location"),
        ("record build and encode, us per changed SKU", "state", "record_build_us_per_sku"),
        ("record written, bytes per changed SKU", "state", "record_bytes_per_sku"),
        ("feed record build, us per changed SKU", "state", "feed_record_us_per_sku"),
        ("feed record, bytes per changed SKU", "state", "feed_record_bytes_per_sku"),
        ("Redis, bytes per SKU-location", "redis", "redis_bytes_per_sku_location"),
        ("Redis, bytes per SKU", "redis", "redis_bytes_per_sku"),
        ("HTTP answer (all locations), bytes", "redis", "answer_bytes_per_sku"),
    )
    for label, part, field in lines:
        values = [str(size[part][field]) for size in report["sizes"].values()]
        rows.append(f"| {label} | " + " | ".join(values) + " |")
    for kind, label in (("http", "HTTP single read"), ("grpc", "gRPC Get, one location")):
        values = [
            f"{size['reads'][kind]['requests_per_second']:,} "
            f"({size['reads'][kind]['server_cpu_percent']}% CPU)"
            for size in report["sizes"].values()
        ]
        rows.append(f"| {label}, req/s (server CPU) | " + " | ".join(values) + " |")
    return "\n".join(rows)


def parse_args(argv: Sequence[str] | None) -> tuple[Params, Path, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench_sizing", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--locations", default="20,200,500", help="locations per SKU, a list")
    parser.add_argument("--sku-locations", type=int, default=200_000, help="at every size")
    parser.add_argument("--seconds", type=float, default=10.0, help="per read run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved read rounds")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.sku_locations, args.seconds, args.rounds = 20_000, 2.0, 1
    try:
        locations = tuple(int(n) for n in args.locations.split(","))
    except ValueError:
        parser.error("--locations must be a comma-separated list of numbers")
    if min(locations) < 1 or args.sku_locations < max(locations) or args.rounds < 1:
        parser.error("need locations >= 1, --sku-locations >= the largest, --rounds >= 1")
    params = Params(
        locations=locations,
        sku_locations=args.sku_locations,
        seconds=args.seconds,
        rounds=args.rounds,
        connections=args.connections,
        redis_url=args.redis_url,
        seed=args.seed,
    )
    return params, args.output, args.keep_logs


def main(argv: Sequence[str] | None = None) -> int:
    params, output, keep_logs = parse_args(argv)
    return run_cli(
        "bench-sizing-",
        lambda log_dir: run(params, log_dir),
        keep_logs,
        lambda report: write_report(output, report, render),
    )


if __name__ == "__main__":
    sys.exit(main())
