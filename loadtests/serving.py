"""What the benchmarks (``loadtests.bench``, ``loadtests.bench_reserve``) share: serving
records written straight to Redis, waiting for an HTTP API, stopping the services a
measurement started, and a fresh development broker."""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request

from availability.ats import LocationAvailability, SkuAvailability
from dev.broker import DevBroker
from dev.processes import stop_process
from infra.config import Settings
from infra.store import AvailabilityStore
from loadtests.bench_cli import BenchError
from loadtests.bench_stack import Stack, free_port
from loadtests.workload import CATALOGUE_ON_HAND, location_name, sku_name

log = logging.getLogger("bench")


async def seed_serving(settings: Settings, skus: int, locations: int) -> None:
    """Serving records as the worker writes them for the catalogue (no worker needed)."""
    store = AvailabilityStore.for_settings(settings)
    try:
        names = [location_name(j) for j in range(locations)]
        records = [
            SkuAvailability(
                sku_name(i),
                tuple(LocationAvailability(n, CATALOGUE_ON_HAND, 0, 0, 0, 0, {}) for n in names),
                None,
            )
            for i in range(skus)
        ]
        for start in range(0, len(records), 500):
            await store.write_records(records[start : start + 500])
    finally:
        await store.close()


def wait_http(url: str, stack: Stack, timeout: float = 60.0, *, authorization: str) -> None:
    """Until ``url`` answers 200."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"Authorization": authorization})
    while True:
        try:
            with urllib.request.urlopen(request, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        stack.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{url} did not answer 200 within {timeout:.0f} s")
        time.sleep(0.2)


def stop_services_since(stack: Stack, already_running: int) -> None:
    """Stop the services a measurement started (those after the first ``already_running``)."""
    for service in reversed(stack.services[already_running:]):
        stop_process(service.proc, 10.0)
        service.log_file.close()
        stack.services.remove(service)


def fresh_broker(stack: Stack) -> None:
    """A new, empty development broker for the next measurement: the one before holds
    the topics of the runs so far in memory, and it works more slowly the more it
    holds (seen: a second floor run a quarter slower than the first)."""
    if stack.broker is not None:
        stack.broker.stop()
    stack.broker = DevBroker(free_port(), stack.log_dir).start()
    log.info("broker at %s", stack.broker.bootstrap_servers)
