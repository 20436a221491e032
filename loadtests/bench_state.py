"""``make bench`` section ``state``: a worker's memory over a long reservation-heavy run.

A stream of reservation lines (each created, then most released or fulfilled at
once, the rest left to expire a few seconds later), every line on a new
``reservation_id``, is published at a steady rate through one real worker, twice:
with a short state horizon (``--state-horizon``, so that lines leave the state
within the run, README "State and recovery") and with the default horizon of 7 days
(nothing leaves: the control). The worker's resident memory is sampled every
``SAMPLE_EVERY`` seconds while events are folded. With the short horizon, memory
must stop growing once a horizon's worth of lines is held; the control shows what
it grows by without pruning.

The ERP balances go round the SKUs in turn (every ``BALANCE_EVERY``-th line, the
next SKU), as an ERP's periodic export does. What a SKU holds besides its lines, its
settled baseline and the fulfilments since it (on-hand deltas, bounded by balances,
not by the horizon), reaches its steady size once the balances have been round every
SKU (``balance_cycle``): growth is measured after that and the horizon, whichever is
later (``warm_seconds``). Balances drawn at random instead reach a SKU only after an
exponentially distributed wait (a mean of one cycle, some SKUs several), and the
state filled towards its steady size for ten minutes: that slowing growth was the
workload's, not a leak (BENCHMARKS.md "State memory").
"""

from __future__ import annotations

import asyncio
import logging
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import orjson
import redis
from aiokafka import AIOKafkaProducer

from dev.processes import stop_process as stop_child_process
from infra.config import Settings
from infra.kafka import kafka_client_options
from infra.topics import create_topics
from loadtests.bench_cli import BenchError
from loadtests.bench_measure import rss_bytes
from loadtests.bench_stack import Stack, bench_settings, delete_keys, folded_count

log = logging.getLogger("bench")

SAMPLE_EVERY: Final[float] = 10.0
DEFAULT_HORIZON: Final[float] = 7 * 24 * 3600.0
SKEW: Final[float] = 10.0  # AVAILABILITY_MAX_FUTURE_SKEW of both runs
BALANCE_EVERY: Final[int] = 10  # lines per ERP balance
EXPIRING: Final[float] = 0.3  # the share of lines left to expire (one event each)
#: Events per line: its create, a closer unless it expires, and a share of a balance.
EVENTS_PER_LINE: Final[float] = 1 + (1 - EXPIRING) + 1 / BALANCE_EVERY


@dataclass(frozen=True)
class StateParams:
    seconds: float  # how long events are published, per run
    rate: float  # events per second
    horizon: float  # the short horizon
    skus: int
    partitions: int
    redis_url: str
    worker_batch_bytes: int
    seed: int


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def sku_name(index: int) -> str:
    return f"RS-{index:05d}"


def reservation_events(run_id: str, skus: int, rng: random.Random) -> Iterator[dict[str, Any]]:
    """Lines without end on random SKUs, dated as they are made: created, then (70%)
    released or fulfilled, or (30%) left to expire 5 s later; and every
    ``BALANCE_EVERY``-th line an ERP balance of the next SKU in turn, which contains
    the fulfilments before it (on-hand deltas are bounded by balances, not by the
    horizon)."""
    line = 0
    while True:
        line += 1
        now = datetime.now(UTC)
        if line % BALANCE_EVERY == 0:
            balanced = sku_name((line // BALANCE_EVERY - 1) % skus)
            yield {"sku": balanced, "event_id": f"{run_id}-b{line}", "type": "erp.balance",
                   "location_id": "S1", "on_hand": 1000, "as_of": stamp(now)}  # fmt: skip
        sku = sku_name(rng.randrange(skus))
        common = {"sku": sku, "reservation_id": f"{run_id}-{line}", "location_id": "S1"}
        created = {**common, "event_id": f"{run_id}-c{line}", "type": "reservation.created",
                   "quantity": rng.randint(1, 3), "occurred_at": stamp(now)}  # fmt: skip
        roll = rng.random()
        if roll < EXPIRING:
            created["expires_at"] = stamp(now + timedelta(seconds=5))
            yield created
        elif roll < EXPIRING + (1 - EXPIRING) / 2:
            yield created
            yield {**common, "event_id": f"{run_id}-x{line}", "type": "reservation.released",
                   "occurred_at": stamp(now)}  # fmt: skip
        else:
            yield created
            yield {**common, "event_id": f"{run_id}-f{line}", "type": "reservation.fulfilled",
                   "quantity": 1, "occurred_at": stamp(now)}  # fmt: skip


def rss_mib(pid: int) -> float:
    return round(rss_bytes(pid) / 2**20, 1)


async def publish_steadily(
    settings: Settings,
    params: StateParams,
    run_id: str,
    sample: Callable[[int], None],
) -> int:
    """Publish at ``params.rate`` for ``params.seconds``, calling ``sample(published)``
    every SAMPLE_EVERY seconds; returns how many were published."""
    producer = AIOKafkaProducer(
        **kafka_client_options(settings),
        acks=1,
        linger_ms=5,
        max_batch_size=65536,
        client_id="bench-state",
    )
    await producer.start()
    events = reservation_events(run_id, params.skus, random.Random(params.seed))
    published = 0
    started = time.monotonic()
    next_sample = started
    try:
        while (elapsed := time.monotonic() - started) < params.seconds:
            due = int(elapsed * params.rate) + int(params.rate / 10)
            sends = []
            while published < due:
                event = next(events)
                sends.append(
                    await producer.send(
                        settings.reservations_topic,
                        orjson.dumps(event),
                        key=event["sku"].encode(),
                    )
                )
                published += 1
            await asyncio.gather(*sends)
            if time.monotonic() >= next_sample:
                sample(published)
                next_sample += SAMPLE_EVERY
            await asyncio.sleep(0.1)
    finally:
        await producer.stop()
    return published


def measure_run(
    stack: Stack, params: StateParams, horizon: float, fresh_broker: Callable[[Stack], None]
) -> dict[str, Any]:
    fresh_broker(stack)
    assert stack.broker is not None
    data_root = Path(tempfile.mkdtemp(prefix="state-", dir=stack.log_dir))
    settings = bench_settings(
        stack.broker.url,
        params.redis_url,
        data_root,
        params.partitions,
        params.worker_batch_bytes,
    ).model_copy(
        # A short skew too: a balance settles (forgets the fulfilments it contains)
        # once it is older than the skew.
        update={"state_horizon": horizon, "max_future_skew": SKEW, "worker_metrics_port": 0}
    )
    stack.settings = settings
    asyncio.run(create_topics(settings))
    already = len(stack.services)
    worker = stack.start_service(f"worker-state-{horizon:.0f}", "streams", settings)
    client = redis.Redis.from_url(params.redis_url)
    samples: list[dict[str, Any]] = []
    started = time.monotonic()

    def sample(published: int) -> None:
        stack.check_alive()
        samples.append(
            {
                "seconds": round(time.monotonic() - started),
                "published": published,
                "folded": folded_count(client, settings),
                "rss_mib": rss_mib(worker.proc.pid),
            }
        )
        log.info("state (horizon %.0f s): %s", horizon, samples[-1])

    try:
        # The worker up and caught up on nothing first: its start is not measured.
        deadline = time.monotonic() + 120
        while not client.hgetall(f"{settings.redis_key_prefix}:workers"):
            stack.check_alive()
            if time.monotonic() > deadline:
                raise BenchError("the worker did not report within 120 s")
            time.sleep(0.5)
        run_id = settings.topic_prefix.rstrip(".")
        published = asyncio.run(publish_steadily(settings, params, run_id, sample))
        deadline = time.monotonic() + 300
        while folded_count(client, settings) < published:
            stack.check_alive()
            if time.monotonic() > deadline:
                raise BenchError("the worker did not fold the state run within 300 s")
            time.sleep(0.5)
        sample(published)
        return {"horizon_seconds": horizon, "published": published, "samples": samples}
    finally:
        for service in reversed(stack.services[already:]):
            stop_child_process(service.proc, 10.0)
            service.log_file.close()
            stack.services.remove(service)
        client.close()
        delete_keys(settings)
        stack.settings = None


def growth(run: Mapping[str, Any], warm: float) -> float | None:
    """RSS MiB gained per minute over the samples after ``warm`` seconds."""
    late = [s for s in run["samples"] if s["seconds"] >= warm]
    if len(late) < 2:
        return None
    span = late[-1]["seconds"] - late[0]["seconds"]
    return round((late[-1]["rss_mib"] - late[0]["rss_mib"]) / span * 60, 1) if span else None


def balance_cycle(skus: int, rate: float) -> float:
    """Seconds the ERP balances take to go round every SKU once."""
    return skus * BALANCE_EVERY * EVENTS_PER_LINE / rate


def warm_seconds(params: StateParams) -> float:
    """When the short-horizon state has its steady size: every SKU's baseline settled
    (a balance cycle and the settle window) and a horizon's worth of lines held,
    whichever is later, and two samples' time for the fold and the pruner."""
    settled = balance_cycle(params.skus, params.rate) + SKEW
    return round(max(settled, params.horizon) + 2 * SAMPLE_EVERY)


def measure_state_memory(
    stack: Stack, params: StateParams, fresh_broker: Callable[[Stack], None]
) -> dict[str, Any]:
    runs = [measure_run(stack, params, h, fresh_broker) for h in (params.horizon, DEFAULT_HORIZON)]
    warm = warm_seconds(params)
    for run in runs:
        run["rss_growth_mib_per_minute_after_warmup"] = growth(run, warm)
    return {
        "rate": params.rate,
        "seconds": params.seconds,
        "skus": params.skus,
        "balance_cycle_seconds": round(balance_cycle(params.skus, params.rate)),
        "runs": runs,
        "warm_seconds": warm,
    }


def state_lines(state: Mapping[str, Any]) -> Sequence[str]:
    lines = [
        "",
        f"state memory: reservation lines at {state['rate']:.0f} events/s for"
        f" {state['seconds']:.0f} s, worker RSS MiB over time (balances round"
        f" {state.get('skus', '?')} SKUs every {state.get('balance_cycle_seconds', '?')} s)",
    ]
    for run in state["runs"]:
        horizon = run["horizon_seconds"]
        label = f"horizon {horizon:.0f} s" if horizon < DEFAULT_HORIZON else "horizon 7 days"
        points = ", ".join(f"{s['seconds']}s {s['rss_mib']}" for s in run["samples"])
        lines.append(f"  {label:<16} {points}")
        lines.append(
            f"  {'':<16} growth after {state['warm_seconds']:.0f} s:"
            f" {run['rss_growth_mib_per_minute_after_warmup']} MiB/min"
        )
    return lines
