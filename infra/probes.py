"""Kubernetes probes of the processes that have no HTTP API of their own (the worker,
the gRPC server, the push process), served beside their Prometheus ``/metrics``.

- ``/livez``: the process's asyncio event loop still turns. A task on the loop
  (:class:`LoopHeartbeat`) stamps the time every second; the probe server runs in its
  own thread, so it answers even when the loop is stuck, and answers 503 once the
  stamp is older than :data:`STUCK_AFTER` seconds. A stuck loop (a blocking call, a
  busy loop, a deadlock) is the failure a restart cures and nothing else detects: the
  process is up, its port answers, and it does no work.
- ``/readyz``: the process's own readiness, where it has one (the gRPC server: Redis
  answers, as its ``grpc.health.v1`` status says); otherwise the same as ``/livez``.

Every other path is the Prometheus exposition, as ``prometheus_client`` serves it.
The answers are JSON: ``{"status": "ok"}`` or ``{"status": "failing", "reason": ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

log = logging.getLogger(__name__)

OK = "ok"
#: Seconds between the heartbeat's stamps.
BEAT_INTERVAL = 1.0
#: A stamp older than this means the loop is stuck. Well above a full garbage
#: collection or a large fold batch (each well under a second), so that only a loop
#: that has stopped turning fails the probe.
STUCK_AFTER = 10.0

#: A check: ``OK``, or why the process fails the probe.
Check = Callable[[], str]


class LoopHeartbeat:
    """Proof that an asyncio event loop still turns, readable from any thread."""

    def __init__(self, interval: float = BEAT_INTERVAL, stuck_after: float = STUCK_AFTER) -> None:
        self.interval = interval
        self.stuck_after = stuck_after
        self._beat: float | None = None  # monotonic; None until the loop first runs it
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start beating on the running loop (call from a coroutine on it); a second
        call while it beats changes nothing."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self) -> None:
        """Stamp the time every ``interval`` seconds, for as long as the loop turns."""
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(self.interval)

    def check(self) -> str:
        """``OK`` while the last stamp is recent; else why not (for ``/livez``)."""
        if self._beat is None:
            return "the event loop has not started yet"
        age = time.monotonic() - self._beat
        if age > self.stuck_after:
            return f"the event loop has not run for {age:.1f} s"
        return OK


class _Quiet(WSGIRequestHandler):
    """The kubelet probes every few seconds: no line per request in the log."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def probe_app(registry: CollectorRegistry, live: Check, ready: Check | None = None) -> Any:
    """The WSGI application: ``/livez``, ``/readyz``, and the metrics on every other path."""
    metrics = make_wsgi_app(registry)
    checks = {"/livez": live, "/readyz": ready or live}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        check = checks.get(environ.get("PATH_INFO", ""))
        if check is None:
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        try:
            state = check()
        except Exception as exc:  # a probe answers; it never fails with a stack trace
            log.warning("probe %s: %r", environ.get("PATH_INFO"), exc)
            state = "the check itself failed"
        body = {"status": OK} if state == OK else {"status": "failing", "reason": state}
        status = "200 OK" if state == OK else "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]

    return app


def serve_probes(
    port: int,
    registry: CollectorRegistry,
    live: Check,
    ready: Check | None = None,
    host: str = "0.0.0.0",
) -> ThreadingWSGIServer:
    """Serve :func:`probe_app` on ``host:port`` from a daemon thread (OSError if the port
    cannot be bound). All interfaces by default: the kubelet and Prometheus call it from
    outside the pod."""
    server = make_server(
        host, port, probe_app(registry, live, ready), ThreadingWSGIServer, handler_class=_Quiet
    )
    threading.Thread(target=server.serve_forever, name=f"probes:{port}", daemon=True).start()
    return server
