"""infra.probes: /livez fails while the event loop is stuck, and recovers with it; a
real loop in a thread, a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from infra.probes import OK, LoopHeartbeat, serve_probes


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    running = asyncio.new_event_loop()
    thread = threading.Thread(target=running.run_forever, daemon=True)
    thread.start()
    yield running
    running.call_soon_threadsafe(running.stop)
    thread.join(5)
    running.close()


def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_livez_fails_while_the_loop_is_stuck(loop: asyncio.AbstractEventLoop) -> None:
    heartbeat = LoopHeartbeat(interval=0.05, stuck_after=0.5)
    assert heartbeat.check() == "the event loop has not started yet"
    registry = CollectorRegistry()
    Counter("probe_test_things", "things", registry=registry).inc()
    server = serve_probes(0, registry, live=heartbeat.check, host="127.0.0.1")
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        loop.call_soon_threadsafe(heartbeat.start)
        wait_for(lambda: heartbeat.check() == OK)
        live = httpx.get(f"{base}/livez")
        assert (live.status_code, live.json()) == (200, {"status": "ok"})
        assert httpx.get(f"{base}/readyz").status_code == 200  # no check of its own: /livez
        assert "probe_test_things_total 1.0" in httpx.get(f"{base}/metrics").text

        loop.call_soon_threadsafe(time.sleep, 1.5)  # a blocking call on the loop
        wait_for(lambda: httpx.get(f"{base}/livez").status_code == 503)
        stuck = httpx.get(f"{base}/livez").json()
        assert stuck["status"] == "failing"
        assert stuck["reason"].startswith("the event loop has not run for ")

        wait_for(lambda: httpx.get(f"{base}/livez").status_code == 200)  # it turns again
    finally:
        asyncio.run_coroutine_threadsafe(heartbeat.stop(), loop).result(5)
        server.shutdown()
        server.server_close()


def test_readyz_answers_its_own_check_and_survives_a_failing_one() -> None:
    states = iter(["NOT_SERVING: Redis does not answer", OK])

    def ready() -> str:
        return next(states)

    def broken() -> str:
        raise RuntimeError("boom")

    server = serve_probes(0, CollectorRegistry(), live=broken, ready=ready, host="127.0.0.1")
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        first = httpx.get(f"{base}/readyz")
        assert first.status_code == 503
        assert first.json()["reason"] == "NOT_SERVING: Redis does not answer"
        assert httpx.get(f"{base}/readyz").status_code == 200
        live = httpx.get(f"{base}/livez")
        assert live.status_code == 503
        assert live.json() == {"status": "failing", "reason": "the check itself failed"}
    finally:
        server.shutdown()
        server.server_close()
