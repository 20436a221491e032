"""Benchmark: a 3-master Redis Cluster beside a single Redis, in one run (README
"Redis Cluster", BENCHMARKS.md "Redis Cluster").

Both backends are started here on loopback ports (Debian's ``redis-server``; a
fresh single Redis, not the shared one), with the same catalogue of serving records.

- Reads: the HTTP API (one uvicorn worker) in front of each backend, wrk with a
  random SKU per request, single reads and batches of 100; rounds interleaved
  (single, cluster, single, cluster, ...) because the machine's speed drifts.
- Fold writes: the stream processor's Redis side of a fold, in this process: batches
  of changed records through ``AvailabilityStore.write_encoded`` (the write script:
  record, holds, sharded publish) and the change feed's ``mark_published``, as the
  worker sends them after a fold batch; records per second, interleaved rounds.
  (The end-to-end fold with Kafka is ``make bench``; its Redis part is what differs.)

``python -m loadtests.bench_cluster [--quick]``; JSON to ``--output``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from availability.ats import LocationAvailability, SkuAvailability
from dev.broker import DevBroker
from dev.processes import stop_process
from dev.redis_cluster import DevRedisCluster, cluster_ports
from dev.redis_server import ensure_redis
from infra.config import Settings
from infra.records import encode_whole
from infra.store import AvailabilityStore
from infra.topics import create_topics
from loadtests.bench_stack import Service, Stack, bench_settings, free_port
from loadtests.credentials import bearer
from loadtests.http_load import LoadRun, run_wrk
from loadtests.serving import seed_serving, wait_http
from loadtests.workload import location_name, sku_name

log = logging.getLogger("bench_cluster")

BACKENDS = ("single", "cluster")


async def mark_complete(settings: Settings) -> None:
    """The serving layer counts as built (the records were seeded, no worker runs)."""
    store = AvailabilityStore.for_settings(settings)
    try:
        epoch = await store.begin_rebuild(settings.partitions)
        await store.mark_built(epoch, range(settings.partitions))
    finally:
        await store.close()


def read_rounds(
    stack: Stack,
    targets: Mapping[str, tuple[str, Service]],
    kind: str,
    args: argparse.Namespace,
    authorization: str,
) -> dict[str, Any]:
    runs: dict[str, list[LoadRun]] = {name: [] for name in targets}
    for round_ in range(args.read_rounds):
        for name, (url, _) in targets.items():
            result = run_wrk(
                url,
                kind=kind,
                authorization=authorization,
                skus=args.skus,
                connections=args.read_connections,
                seconds=args.read_seconds,
                seed=7 + round_,
            )
            stack.check_alive()
            if result.errors:
                raise RuntimeError(f"{name}: {result.errors} failed {kind} reads")
            log.info(
                "%s reads, %s: %.0f req/s, p99 %.2f ms", kind, name, result.rate, result.p99_ms
            )
            runs[name].append(result)
    summary: dict[str, Any] = {"connections": args.read_connections}
    for name, results in runs.items():
        summary[name] = {
            "runs": [r.summary() for r in results],
            "requests_per_second": round(sum(r.rate for r in results) / len(results)),
            "p99_ms": round(max(r.p99_ms for r in results), 2),
        }
    summary["cluster_over_single"] = round(
        summary["cluster"]["requests_per_second"] / summary["single"]["requests_per_second"], 3
    )
    return summary


async def fold_writes(settings: Mapping[str, Settings], args: argparse.Namespace) -> dict[str, Any]:
    """Records/s through the worker's Redis calls of a fold batch, per backend."""
    stores = {name: AvailabilityStore.for_settings(s) for name, s in settings.items()}
    rates: dict[str, list[float]] = {name: [] for name in stores}
    try:
        names = [location_name(j) for j in range(args.locations)]
        for round_ in range(args.fold_rounds):
            for name, store in stores.items():
                on_hand = 1000 + round_ * 10 + BACKENDS.index(name)  # every record changes
                records = [
                    encode_whole(
                        SkuAvailability(
                            sku_name(i),
                            tuple(LocationAvailability(n, on_hand, 0, 0, 0, 0, {}) for n in names),
                            None,
                        )
                    )
                    for i in range(args.skus)
                ]
                started = time.perf_counter()
                for first in range(0, len(records), args.fold_batch):
                    batch = records[first : first + args.fold_batch]
                    replies, _ = await store.write_encoded(batch)
                    await store.mark_published(
                        (write.sku, reply.version)
                        for write, reply in zip(batch, replies, strict=True)
                        if reply.version
                    )
                seconds = time.perf_counter() - started
                rates[name].append(len(records) / seconds)
                log.info("fold writes, %s: %.0f records/s", name, rates[name][-1])
    finally:
        for store in stores.values():
            await store.close()
    summary: dict[str, Any] = {"batch": args.fold_batch, "records_per_round": args.skus}
    for name, values in rates.items():
        summary[name] = {
            "records_per_second": round(sum(values) / len(values)),
            "runs": [round(v) for v in values],
        }
    summary["cluster_over_single"] = round(
        summary["cluster"]["records_per_second"] / summary["single"]["records_per_second"], 3
    )
    return summary


def run(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    stack = Stack(log_dir)
    single_port = free_port()
    single_url = f"redis://127.0.0.1:{single_port}/0"
    single = ensure_redis(single_url, log_dir)
    if single is None:
        raise RuntimeError(f"something already answers at {single_url}")
    try:
        with DevRedisCluster(cluster_ports(3), log_dir / "cluster") as cluster:
            stack.broker = DevBroker(free_port(), log_dir).start()
            single_settings = bench_settings(stack.broker.url, single_url, log_dir, 4, None)
            settings = {
                "single": single_settings,
                # The same credential, its own ports, topics and keys.
                "cluster": single_settings.model_copy(
                    update={
                        "redis_url": cluster.url,
                        "redis_cluster": True,
                        "topic_prefix": "c" + single_settings.topic_prefix,
                        "http_port": free_port(),
                        "grpc_port": free_port(),
                    }
                ),
            }
            for s in settings.values():
                asyncio.run(create_topics(s))
                asyncio.run(seed_serving(s, args.skus, args.locations))
                asyncio.run(mark_complete(s))
            targets = {
                name: (
                    f"http://127.0.0.1:{s.http_port}",
                    stack.start_service(f"http-{name}", "services.http", s),
                )
                for name, s in settings.items()
            }
            authorization = bearer(settings["single"].token.get_secret_value())
            for url, _ in targets.values():
                wait_http(
                    f"{url}/v1/availability/{sku_name(0)}", stack, authorization=authorization
                )
                run_wrk(url, kind="single", skus=args.skus, connections=4, seconds=2, seed=0,
                        authorization=authorization)  # fmt: skip
            report: dict[str, Any] = {
                "skus": args.skus,
                "locations": args.locations,
                "single": read_rounds(stack, targets, "single", args, authorization),
                "batch": read_rounds(stack, targets, "batch", args, authorization),
            }
            stack.shutdown()  # the HTTP servers: their CPU is the fold writes' now
            report["fold_writes"] = asyncio.run(fold_writes(settings, args))
            return report
    finally:
        stack.shutdown()
        stop_process(single, 5.0)


def render(report: Mapping[str, Any]) -> str:
    lines = [
        f"Redis Cluster (3 masters) beside a single Redis: {report['skus']} SKUs x"
        f" {report['locations']} locations",
        "| measure | single Redis | 3-master cluster | cluster/single |",
        "|---|---|---|---|",
    ]
    for kind in ("single", "batch"):
        part = report[kind]
        lines.append(
            f"| HTTP {kind} reads, req/s (p99 ms) | {part['single']['requests_per_second']:,}"
            f" ({part['single']['p99_ms']}) | {part['cluster']['requests_per_second']:,}"
            f" ({part['cluster']['p99_ms']}) | {part['cluster_over_single']} |"
        )
    fold = report["fold_writes"]
    lines.append(
        f"| fold writes (batches of {fold['batch']}), records/s"
        f" | {fold['single']['records_per_second']:,} | {fold['cluster']['records_per_second']:,}"
        f" | {fold['cluster_over_single']} |"
    )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_cluster", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small run (a smoke test)")
    parser.add_argument("--skus", type=int, default=10_000)
    parser.add_argument("--locations", type=int, default=8)
    parser.add_argument("--read-seconds", type=float, default=10.0)
    parser.add_argument("--read-rounds", type=int, default=2)
    parser.add_argument("--read-connections", type=int, default=16)
    parser.add_argument("--fold-batch", type=int, default=500)
    parser.add_argument("--fold-rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("bench-cluster.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.skus, args.read_seconds, args.read_rounds, args.fold_rounds = 1000, 2.0, 1, 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    report = run(args, log_dir)
    args.output.write_text(json.dumps(report, indent=2))
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
