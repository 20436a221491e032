"""``rebuild``: have the workers rewrite every serving record, and wait until they have."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from infra.config import Settings
from infra.store import AvailabilityStore


async def rebuild(
    settings: Settings, *, wait: bool, timeout: float, say: Callable[[str], None]
) -> int:
    """Drop the serving layer's built marks; the workers notice within a heartbeat and
    rewrite their partitions (``streams.rebuild``). Returns the exit code."""
    store = AvailabilityStore.for_settings(settings)
    try:
        workers = await store.workers(max_age=settings.worker_status_max_age)
        await store.forget_built()
        say(f"rebuild requested ({len(workers)} worker(s) reporting)")
        if not workers:
            say("no stream-processor worker is running: the rebuild starts when one does")
        if not wait:
            return 0
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            layer = await store.serving_layer()
            text = layer.describe()
            if text != last:
                say(f"serving layer {text}")
                last = text
            if layer.complete:
                return 0
            if time.monotonic() >= deadline:
                say(f"not complete after {timeout:g} s; the workers go on (see their logs)")
                return 1
            await asyncio.sleep(0.5)
    finally:
        await store.close()
