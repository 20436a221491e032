"""Reusable parts of the integration tests (the fixtures are in ``conftest.py``).

- :func:`free_port`; :func:`dev_field_overrides` and :func:`settings_env` (from ``dev.stack``)
- :func:`produce`, :func:`consume_all`, :func:`topic_partitions`, :func:`wait_until`
- :class:`ProcessHandle`: ``python -m streams`` / ``python -m services.http`` as subprocesses
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import RecordMetadata

from dev.processes import ENV_PREFIX as ENV_PREFIX
from dev.processes import dev_field_overrides as dev_field_overrides
from dev.processes import popen_child, stop_process
from dev.processes import settings_env as settings_env
from dev.stack import http_status
from infra.config import ApiKeySpec, Settings
from infra.kafka import kafka_client_options
from infra.store import AvailabilityStore
from services.auth.api_keys import hash_api_key, new_api_key
from services.auth.scopes import ALL_SCOPES

REPO_ROOT: Final[Path] = Path(__file__).resolve().parents[2]


#: The tests' credential: a fresh API key every session, holding every scope.
TEST_API_KEY: Final[str] = new_api_key()


def api_key_spec(
    key: str = TEST_API_KEY, scopes: Sequence[str] = ALL_SCOPES, key_id: str = "tests"
) -> ApiKeySpec:
    """The configuration entry of ``key`` (its hash, never the key)."""
    return ApiKeySpec(id=key_id, sha256=hash_api_key(key), scopes=tuple(scopes))


def auth_headers(key: str = TEST_API_KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- Kafka


class _SkuKey:
    """Sentinel: key each event by its ``sku``."""

    def __repr__(self) -> str:
        return "SKU_KEY"


SKU_KEY: Final = _SkuKey()


def _sku_of(event: Mapping[str, Any] | bytes) -> bytes | None:
    if isinstance(event, bytes):
        try:
            event = orjson.loads(event)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(event, dict):
            return None
    sku = event.get("sku")
    return sku.encode() if isinstance(sku, str) else None


def new_producer(settings: Settings, max_batch_size: int = 1) -> AIOKafkaProducer:
    """The tests' producer (acks=all; batches of one record unless ``max_batch_size``
    says more bytes, so that end offsets are exact on the development broker)."""
    return AIOKafkaProducer(
        **kafka_client_options(settings),
        acks="all",
        max_batch_size=max_batch_size,
        linger_ms=0 if max_batch_size == 1 else 5,
        client_id="tests-produce",
    )


async def produce(
    settings: Settings,
    topic: str,
    events: Sequence[Mapping[str, Any] | bytes],
    key: str | bytes | _SkuKey | None = SKU_KEY,
    *,
    partition: int | None = None,
    max_batch_size: int = 1,
    producer: AIOKafkaProducer | None = None,
) -> list[RecordMetadata]:
    """Publish ``events`` (dicts are orjson-encoded, bytes sent as they are) in order and
    wait until each is acknowledged (acks=all).

    ``key``: default the event's ``sku`` (None when it has none or is not JSON);
    ``None`` for no key; a str/bytes for that key on every event. ``partition`` forces
    a partition. ``producer``: a started ``new_producer`` to send with (many calls in
    a row: starting one fetches the broker's metadata of every topic, slow once a
    session has made hundreds); else one is started and stopped for this call.
    """
    if producer is None:
        own = new_producer(settings, max_batch_size)
        await own.start()
        try:
            return await produce(settings, topic, events, key, partition=partition, producer=own)
        finally:
            await own.stop()
    futures = []
    for event in events:
        value = event if isinstance(event, bytes) else orjson.dumps(event)
        if isinstance(key, _SkuKey):
            record_key = _sku_of(event)
        elif isinstance(key, str):
            record_key = key.encode()
        else:
            record_key = key
        futures.append(await producer.send(topic, value, key=record_key, partition=partition))
    await producer.flush()
    return list(await asyncio.gather(*futures))


async def consume_all(
    settings: Settings, topic: str, timeout: float = 10.0, *, idle: float = 1.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from the beginning (all partitions, no consumer group),
    read until nothing new arrived for ``idle`` seconds once the end offsets seen at the
    start are reached, or until ``timeout``. Records are in partition order, then offset."""
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        client_id="tests-consume",
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        partitions = await topic_partitions(settings, topic)
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(*tps, timeout_ms=100)
            if any(batch.values()):
                for part in batch.values():
                    records.extend(part)
                last_new = time.monotonic()
                continue
            reached = all([await consumer.position(tp) >= end[tp] for tp in tps])
            if reached and time.monotonic() - last_new >= idle:
                break
    finally:
        await consumer.stop()
    records.sort(key=lambda r: (r.partition, r.offset))
    return records


async def topic_partitions(settings: Settings, topic: str) -> set[int]:
    """The partition ids of ``topic`` (empty if it does not exist). Asks for the metadata
    of all topics: the development broker auto-creates a topic named in a request."""
    admin = AIOKafkaAdminClient(**kafka_client_options(settings), client_id="tests-admin")
    await admin.start()
    try:
        for meta in await admin.describe_topics(None):
            if meta["topic"] == topic:
                return {int(p["partition"]) for p in meta["partitions"]}
        return set()
    finally:
        await admin.close()


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.05
) -> None:
    """Poll an async ``predicate`` until it is true; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------- processes


class ProcessHandle:
    """A service process (``python -m MODULE``) for a test, output captured to a file."""

    def __init__(
        self,
        name: str,
        module: str,
        env: Mapping[str, str],
        log_dir: Path,
        args: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.module = module
        self.argv = [sys.executable, "-m", module, *args]
        self.env = dict(env)
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> ProcessHandle:
        """Start (or restart after it stopped) the process; its log is appended to."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._close_log()
        self._log = self.log_path.open("ab")
        self._log.write(f"---- start {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self.proc = popen_child(self.argv, env=self.env, stdout=self._log, cwd=REPO_ROOT)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process (not waiting for it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None, "not started"
        return self.proc.wait(timeout)

    def terminate(self, timeout: float = 10.0) -> int | None:
        """SIGTERM its process group, SIGKILL after ``timeout``. Returns the exit code."""
        if self.proc is None:
            return None
        code = stop_process(self.proc, timeout)
        self._close_log()
        return code

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def http_ready(port: int, path: str = "/readyz") -> bool:
    return http_status(f"http://127.0.0.1:{port}{path}", timeout=1.0) == 200


async def wait_http_ready(
    port: int,
    timeout: float = 60.0,
    path: str = "/readyz",
    process: ProcessHandle | None = None,
) -> None:
    """Wait until ``GET http://127.0.0.1:PORT/readyz`` returns 200 (fails early if
    ``process`` exits)."""
    deadline = time.monotonic() + timeout
    while True:
        if await asyncio.to_thread(http_ready, port, path):
            return
        if process is not None and not process.running:
            raise AssertionError(
                f"{process.name} exited ({process.returncode}) before {path} was ready:\n"
                f"{process.tail()}"
            )
        if time.monotonic() >= deadline:
            raise AssertionError(f"{path} on port {port} not ready within {timeout} s")
        await asyncio.sleep(0.2)


async def mark_serving_layer_complete(store: AvailabilityStore, partitions: int) -> None:
    """What the stream processor does once its records are written (streams.rebuild),
    for tests that write records themselves."""
    epoch = await store.begin_rebuild(partitions)
    assert await store.mark_built(epoch, range(partitions))


async def drop_keys(store: AvailabilityStore) -> None:
    keys = [key async for key in store.client.scan_iter(match=f"{store.prefix}:*", count=1000)]
    if keys:
        await store.client.delete(*keys)
