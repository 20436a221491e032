"""The gRPC benchmark's catalogue: ``--skus`` x ``--locations`` ERP balances of
``INITIAL_ON_HAND`` units, published to the stack and waited for until every SKU is
served; and how its load producer batches."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

import grpc
from aiokafka import AIOKafkaProducer

from infra.config import Settings
from infra.kafka import kafka_client_options
from loadtests.bench_cli import BenchError
from loadtests.bench_stack import send_all
from loadtests.credentials import grpc_metadata
from loadtests.workload import location_name, sku_name
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from services.grpc.gen.availability.v1 import availability_pb2_grpc as pb_grpc

log = logging.getLogger("bench.grpc")

CHANNEL: Final[str] = "online"
INITIAL_ON_HAND: Final[int] = 1_000_000
# Every sale happens now, long after this: none is contained in the ERP figure.
ERP_AS_OF: Final[str] = "2026-01-01T00:00:00Z"
# The load producer batches and lingers 5 ms, as Kafka's producer does by default
# since 4.0: a request per event cost the development broker about 60% of a core at
# 1,000 events/s, on a machine of two. The linger counts in the latency measured.
# (The development broker reports wrong end offsets after batched produce, so the
# worker's lag figures are off by a batch; no figure here uses them.)
PRODUCER_MAX_BATCH_BYTES: Final[int] = 65536
PRODUCER_LINGER_MS: Final[int] = 5
BATCH_GET_LIMIT: Final[int] = 500  # BatchGetAvailability's maximum


async def publish_catalogue(settings: Settings, skus: int, locations: int, run_id: str) -> None:
    """One ERP balance of ``INITIAL_ON_HAND`` units per SKU and location."""
    producer = AIOKafkaProducer(
        **kafka_client_options(settings),
        acks=1,
        linger_ms=0,
        max_batch_size=PRODUCER_MAX_BATCH_BYTES,
        client_id="bench-seed",
    )
    balances = (
        {
            "type": "erp.balance",
            "event_id": f"{run_id}-erp-{i}-{j}",
            "sku": sku_name(i),
            "location_id": location_name(j),
            "on_hand": INITIAL_ON_HAND,
            "as_of": ERP_AS_OF,
        }
        for i in range(skus)
        for j in range(locations)
    )
    await send_all(producer, settings.erp_topic, balances)


async def wait_catalogue(
    target: str,
    token: str,
    skus: int,
    locations: int,
    alive: Callable[[], None],
    timeout: float,
) -> None:
    """Until BatchGetAvailability shows every SKU with its full initial stock."""
    names = [sku_name(i) for i in range(skus)]
    deadline = time.monotonic() + timeout
    next_report = time.monotonic() + 2.0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.AvailabilityServiceStub(channel)
        while True:
            complete = 0
            for start in range(0, skus, BATCH_GET_LIMIT):
                request = pb.BatchGetAvailabilityRequest(
                    skus=names[start : start + BATCH_GET_LIMIT], channel=CHANNEL
                )
                try:
                    answer = await stub.BatchGetAvailability(
                        request, timeout=10, metadata=grpc_metadata(token)
                    )
                except grpc.aio.AioRpcError as exc:
                    # UNAVAILABLE until the worker has marked the serving layer built.
                    if exc.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    break
                complete += sum(
                    1
                    for item in answer.items
                    if len(item.locations) == locations
                    and all(loc.on_hand == INITIAL_ON_HAND for loc in item.locations)
                )
            if complete == skus:
                return
            alive()
            now = time.monotonic()
            if now > deadline:
                raise BenchError(f"only {complete} of {skus} SKUs served within {timeout:.0f} s")
            if now >= next_report:
                log.info("seed: %d of %d SKUs served so far", complete, skus)
                next_report = now + 2.0
            await asyncio.sleep(0.5)
