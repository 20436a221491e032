"""The Shopify push's figures (``make bench`` section ``push``; alone:
``python -m loadtests.bench_push [--quick]``), measured side by side in one run against
the Shopify stand-in on a Standard-plan bucket (2,000 points, 100 points/s):

**Bulk.** ``--skus`` x ``--locations`` changed SKU-locations (100,000 by default) are
published to the change feed, then the push process starts and pushes them. Its time,
from its first call to the shop's last acknowledgement, is set against the least time
the bucket allows for the calls it made: the points they cost beyond the bucket's
initial 2,000, at 100 points/s. Item ids are in the push's cache beforehand (mapping
costs about one point per SKU, once per ``AVAILABILITY_PUSH_ITEM_TTL``).

**Freshness.** Then, with the bucket refilled, ``--rate`` changes per second (200) for
``--seconds`` (30), each on another SKU-location: from the record's ``computed_at``
(set when it is published to the feed; the worker's own part is in the fold
benchmarks) to the shop's acknowledgement of the call that set it (the stand-in's call
log: the call's start plus its duration), p50 and p99.

Writes ``bench-results/push.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import sys
import time
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from dev.broker import DevBroker
from dev.processes import popen_child, process_env
from dev.redis_server import ensure_redis
from dev.shopify_admin.client import StandIn
from infra.config import Settings
from infra.kafka import kafka_client_options
from infra.shopify_config import ShopifyTarget
from infra.topics import create_topics
from loadtests.bench_cli import BenchError, run_cli
from loadtests.bench_measure import summarize_ms
from loadtests.bench_stack import Service, Stack, bench_settings, delete_keys, free_port
from services.push.state import PushState

log = logging.getLogger("bench")

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT: Final = REPO_ROOT / "bench-results" / "push.json"
TOKEN_ENV: Final = "BENCH_SHOPIFY_TOKEN"
BUCKET_SIZE: Final = 2000.0
RESTORE_RATE: Final = 100.0
BULK_TARGET: Final = 0.90
FRESHNESS_P99_TARGET_MS: Final = 1000.0


def rfc3339(seconds: float) -> str:
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )


def record(sku: str, version: int, figures: dict[str, int], at: float) -> bytes:
    return orjson.dumps(
        {
            "sku": sku,
            "version": version,
            "computed_at": rfc3339(at),
            "ats": sum(figures.values()),
            "locations": [
                {"location_id": loc, "on_hand": n, "reserved": 0, "in_transit": 0,
                 "damaged": 0, "safety_stock": 0, "buffers": {}, "ats": n}
                for loc, n in sorted(figures.items())
            ],
        }
    )  # fmt: skip


def metric(port: int, name: str) -> float:
    """A metric of the push (0 until its metrics port answers)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def acked(call: dict[str, Any]) -> float:
    return float(call["at"]) + float(call.get("seconds", 0.0))


class PushBench:
    def __init__(self, stack: Stack, params: argparse.Namespace) -> None:
        self.stack = stack
        self.params = params
        self.token = f"shpat_bench_{secrets.token_hex(12)}"
        self.skus = [f"B-{n:06d}" for n in range(params.skus)]
        self.locations = [f"L{n:03d}" for n in range(params.locations)]
        self.item_gids: dict[str, str] = {}
        self.location_gids: dict[str, str] = {}

    def run(self) -> dict[str, Any]:
        assert self.stack.broker is not None
        settings = bench_settings(
            self.stack.broker.bootstrap_servers,
            self.params.redis_url,
            self.stack.log_dir / "data",
            self.params.partitions,
            None,
        )
        standin = StandIn(log_dir=self.stack.log_dir)
        try:
            standin.start()
            return self._measure(settings, standin)
        finally:
            standin.close()
            delete_keys(settings)

    def _measure(self, settings: Settings, standin: StandIn) -> dict[str, Any]:
        asyncio.run(create_topics(settings))
        standin.put_shop(tokens=[{"token": self.token, "label": "push"}], plan="standard")
        seeded = standin.seed(
            locations=[{"name": loc} for loc in self.locations],
            items=[{"sku": sku} for sku in self.skus],
        )
        self.item_gids = {s: v["gid"] for s, v in seeded["items"].items()}
        self.location_gids = {name: v["gid"] for name, v in seeded["locations"].items()}
        target = ShopifyTarget.model_validate(
            {
                "name": "bench",
                "shop_domain": standin.shop,
                "admin_url": standin.base_url,
                "access_token": {"env": TOKEN_ENV},
                "locations": {name: v["gid"] for name, v in seeded["locations"].items()},
            }
        )
        settings = settings.model_copy(
            update={"shopify_targets": [target], "push_metrics_port": free_port()}
        )
        asyncio.run(self._prefill_items(settings, self.item_gids))
        levels = len(self.skus) * len(self.locations)
        log.info("push bench: publishing %d changed SKU-locations", levels)
        asyncio.run(self._publish_bulk(settings))
        standin.control("DELETE", "/calls")
        started = time.time()
        service = self._start_push(settings)
        deadline = time.monotonic() + self.params.timeout
        while metric(settings.push_metrics_port, "availability_push_quantities_total") < levels:
            self.stack.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"the push did not set {levels} levels in {self.params.timeout} s")
            time.sleep(0.5)
        bulk = self._bulk_figures(standin.calls(), levels, started)
        log.info("push bench: bulk %s", bulk)
        time.sleep(BUCKET_SIZE / RESTORE_RATE + 1)  # the bucket refills
        standin.control("DELETE", "/calls")
        sent = asyncio.run(self._publish_steady(settings))
        time.sleep(3.0)
        freshness = self._freshness(standin.calls(), sent)
        log.info("push bench: freshness %s", freshness)
        service.proc.terminate()
        return {"bulk": bulk, "freshness": freshness}

    async def _prefill_items(self, settings: Settings, items: dict[str, str]) -> None:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            state = PushState(client, settings.redis_key_prefix, "bench")
            for start in range(0, len(self.skus), 2000):
                chunk = {s: items[s] for s in self.skus[start : start + 2000]}
                await state.save_items(chunk, time.time())
        finally:
            await client.aclose()

    async def _producer(self, settings: Settings) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            **kafka_client_options(settings), acks="all", linger_ms=5,
            max_batch_size=262_144,
        )  # fmt: skip
        await producer.start()
        return producer

    async def _publish_bulk(self, settings: Settings) -> None:
        producer = await self._producer(settings)
        try:
            now = time.time()
            sends = []
            for n, sku in enumerate(self.skus):
                figures = {loc: (n + i) % 50 + 1 for i, loc in enumerate(self.locations)}
                value = record(sku, 1, figures, now)
                sends.append(await producer.send(settings.changes_topic, value, key=sku.encode()))
            await producer.flush()
            await asyncio.gather(*sends)
        finally:
            await producer.stop()

    async def _publish_steady(self, settings: Settings) -> list[tuple[str, str, int, float]]:
        """(sku, location, figure, computed_at) of every change sent, at ``--rate``."""
        producer = await self._producer(settings)
        sent: list[tuple[str, str, int, float]] = []
        try:
            total = int(self.params.rate * self.params.seconds)
            start = time.monotonic()
            for n in range(total):
                due = start + n / self.params.rate
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                index = n % len(self.skus)
                sku = self.skus[index]
                changed = self.locations[(n // len(self.skus)) % len(self.locations)]
                figures = {loc: (index + i) % 50 + 1 for i, loc in enumerate(self.locations)}
                figures[changed] = 1000 + n
                at = time.time()
                value = record(sku, 2 + n, figures, at)
                await producer.send(settings.changes_topic, value, key=sku.encode())
                sent.append((sku, changed, 1000 + n, at))
            await producer.flush()
        finally:
            await producer.stop()
        return sent

    def _start_push(self, settings: Settings) -> Service:
        log_path = self.stack.log_dir / "push.log"
        log_file = log_path.open("ab")
        proc = popen_child(
            [sys.executable, "-m", "services.push"],
            env=process_env(settings, {TOKEN_ENV: self.token}),
            stdout=log_file,
            cwd=REPO_ROOT,
        )
        service = Service("push", proc, log_path, log_file)
        self.stack.services.append(service)
        return service

    def _bulk_figures(
        self, calls: list[dict[str, Any]], levels: int, started: float
    ) -> dict[str, Any]:
        mutations = [c for c in calls if c.get("operationName") == "SetQuantities"]
        ok = [c for c in mutations if c["outcome"] == "ok"]
        spent = sum(float(c.get("actualQueryCost") or 0) for c in calls)
        first = min(float(c["at"]) for c in calls)
        last = max(acked(c) for c in ok)
        taken = last - first
        least = max(0.0, (spent - BUCKET_SIZE) / RESTORE_RATE)
        return {
            "levels": levels,
            "calls": len(calls),
            "set_calls": len(ok),
            "throttled_calls": sum(1 for c in calls if c["outcome"] == "throttled"),
            "points": spent,
            "points_per_quantity": round(spent / levels, 4),
            "seconds": round(taken, 2),
            "seconds_from_push_start": round(last - started, 2),
            "least_seconds_the_bucket_allows": round(least, 2),
            "fraction_of_bucket_limit": round(least / taken, 3) if taken > 0 else None,
            "target": BULK_TARGET,
        }

    def _freshness(
        self, calls: list[dict[str, Any]], sent: Sequence[tuple[str, str, int, float]]
    ) -> dict[str, Any]:
        ack: dict[tuple[str, str, int], float] = {}
        for call in calls:
            if call.get("operationName") != "SetQuantities" or call["outcome"] != "ok":
                continue
            for q in call["variables"]["input"]["quantities"]:
                key = (q["inventoryItemId"], q["locationId"], q["quantity"])
                ack.setdefault(key, acked(call))
        latencies = []
        missing = 0
        for sku, loc, figure, at in sent:
            done = ack.get((self.item_gids[sku], self.location_gids[loc], figure))
            if done is None:
                missing += 1
            else:
                latencies.append(done - at)
        return {
            "rate": self.params.rate,
            "seconds": self.params.seconds,
            "changes": len(sent),
            "not_acknowledged": missing,
            "latency_ms": summarize_ms(np.array(latencies)),
            "set_calls": sum(
                1
                for c in calls
                if c.get("operationName") == "SetQuantities" and c["outcome"] == "ok"
            ),
            "target_p99_ms": FRESHNESS_P99_TARGET_MS,
        }


def measure(stack: Stack, params: argparse.Namespace) -> dict[str, Any]:
    """The ``push`` section of ``make bench`` (and of this module's command line)."""
    bench = PushBench(stack, params)
    return bench.run()


def render(report: dict[str, Any]) -> str:
    bulk, fresh = report["bulk"], report["freshness"]
    latency = fresh["latency_ms"]
    share = 100 * (bulk["fraction_of_bucket_limit"] or 0)
    least = bulk["least_seconds_the_bucket_allows"]
    return "\n".join(
        [
            "",
            "Shopify push (stand-in, Standard bucket: 2,000 points, 100/s)",
            f"  bulk       {bulk['levels']} levels in {bulk['set_calls']} calls,"
            f" {bulk['seconds']} s (least the bucket allows: {least} s) = {share:.1f}% of"
            f" the limit (target >= {100 * BULK_TARGET:.0f}%);"
            f" {bulk['points_per_quantity']} points per level; {bulk['throttled_calls']} throttled",
            f"  freshness  {fresh['changes']} changes at {fresh['rate']}/s:"
            f" p50 {latency.get('p50')} ms, p99 {latency.get('p99')} ms"
            f" (target p99 <= {FRESHNESS_P99_TARGET_MS:.0f} ms);"
            f" {fresh['not_acknowledged']} not acknowledged; {fresh['set_calls']} calls",
            "",
        ]
    )


def from_bench(params: Any) -> argparse.Namespace:
    """This section's parameters within ``make bench`` (``loadtests.bench_params.Params``):
    its Redis and partitions; a small run with ``--quick``."""
    quick = params.skus < 10_000
    return argparse.Namespace(
        skus=1_000 if quick else 10_000,
        locations=10,
        rate=200.0,
        seconds=10.0 if quick else 30.0,
        timeout=300.0,
        redis_url=params.redis_url,
        partitions=params.partitions,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--push-skus", dest="skus", type=int, default=10_000)
    parser.add_argument("--push-locations", dest="locations", type=int, default=10)
    parser.add_argument("--push-rate", dest="rate", type=float, default=200.0)
    parser.add_argument("--push-seconds", dest="seconds", type=float, default=30.0)
    parser.add_argument("--push-timeout", dest="timeout", type=float, default=300.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench_push",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="1,000 x 10 levels, 10 s at 200/s")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--keep-logs", action="store_true")
    params = parser.parse_args(argv)
    if params.quick:
        params.skus, params.seconds = 1_000, 10.0

    def run(log_dir: Path) -> dict[str, Any]:
        stack = Stack(log_dir)
        try:
            stack.broker = DevBroker(free_port(), log_dir).start()
            stack.redis_proc = ensure_redis(params.redis_url, log_dir)
            return measure(stack, params)
        finally:
            stack.shutdown()

    def publish(report: dict[str, Any]) -> None:
        params.output.parent.mkdir(parents=True, exist_ok=True)
        params.output.write_text(json.dumps(report, indent=2) + "\n")
        print(render(report), flush=True)

    return run_cli("bench-push-", run, params.keep_logs, publish)


if __name__ == "__main__":
    sys.exit(main())
