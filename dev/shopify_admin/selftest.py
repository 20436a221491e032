"""``python -m dev.shopify_admin --self-test``: how many ``inventorySetQuantities`` calls
of 250 quantities per second the stand-in serves on this machine.

The stand-in runs as its own process with a bucket too large to throttle; a few
concurrent clients in this process send the canonical SET_QUANTITIES document with
fresh idempotency keys. At 10 points a call, a Standard shop's 100 points/s is 10 calls
a second: the figure must stay far above that for the stand-in never to be the
bottleneck of a bucket benchmark.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from dev.shopify_admin.client import StandIn
from infra.shopify_documents import SET_QUANTITIES

TOKEN = "shpat_selftest"  # a throwaway token of a throwaway local process
ITEMS = 250
CLIENTS = 4


async def _load(standin: StandIn, body_for: Any, seconds: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    headers = {"X-Shopify-Access-Token": TOKEN, "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:

        async def client(number: int) -> None:
            round_ = 0
            while time.monotonic() < deadline:
                round_ += 1
                started = time.monotonic()
                async with session.post(
                    standin.graphql_url, data=body_for(number, round_), headers=headers
                ) as response:
                    answer = await response.json()
                if response.status != 200 or answer["data"]["inventorySetQuantities"]["userErrors"]:
                    raise RuntimeError(f"unexpected answer: {response.status} {answer}")
                latencies.append(time.monotonic() - started)

        await asyncio.gather(*(client(n) for n in range(CLIENTS)))
    return latencies


def self_test(schema: Path, seconds: float) -> int:
    import orjson

    with (
        tempfile.TemporaryDirectory() as tmp,
        StandIn(
            log_dir=Path(tmp), args=("--bucket-size", "1e12", "--restore-rate", "1e12")
        ) as standin,
    ):
        standin.start()
        standin.put_shop(tokens=[{"token": TOKEN, "label": "self-test"}])
        seeded = standin.seed(
            locations=[{"name": "STORE-001"}],
            items=[
                {"sku": f"SKU-{i}", "levels": {"STORE-001": {"available": 5}}} for i in range(ITEMS)
            ],
        )
        location = seeded["locations"]["STORE-001"]["gid"]
        items = [seeded["items"][f"SKU-{i}"]["gid"] for i in range(ITEMS)]

        def body_for(client: int, round_: int) -> bytes:
            quantities = [
                {
                    "inventoryItemId": item,
                    "locationId": location,
                    "quantity": (round_ + i) % 50,
                    "changeFromQuantity": None,
                }
                for i, item in enumerate(items)
            ]
            variables = {
                "idempotencyKey": str(uuid.uuid4()),
                "input": {"name": "available", "reason": "correction", "quantities": quantities},
            }
            return orjson.dumps({"query": SET_QUANTITIES, "variables": variables})

        asyncio.run(_load(standin, body_for, 1.0))  # warm-up: caches, JIT-free but lazy imports
        started = time.monotonic()
        latencies = asyncio.run(_load(standin, body_for, seconds))
        elapsed = time.monotonic() - started
    rate = len(latencies) / elapsed
    latencies.sort()
    print(
        f"self-test: {len(latencies)} inventorySetQuantities calls of {ITEMS} quantities in "
        f"{elapsed:.1f} s with {CLIENTS} clients: {rate:.1f} calls/s "
        f"({rate * ITEMS:,.0f} quantities/s, {rate * 10:,.0f} points/s at 10 points a call); "
        f"latency p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.1f} ms"
    )
    return 0
