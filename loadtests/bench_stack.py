"""The stack of real processes a benchmark measures: its settings (a unique topic and
key prefix, free ports), the services it started (``python -m ...``) and stops again,
waiting until the gRPC server is SERVING, and reading the worker's figures in Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any, Final

import grpc
import orjson
import redis
from aiokafka import AIOKafkaProducer
from grpc_health.v1 import health_pb2

from dev.broker import DevBroker
from dev.processes import DEV_OVERRIDES, ENV_PREFIX, popen_child, process_env
from dev.processes import stop_process as stop_child_process
from infra.config import Settings
from loadtests.bench_cli import BenchError
from loadtests.bench_processes import LoadProcess, Message
from loadtests.credentials import bench_credential
from services.grpc.gen.availability.v1 import availability_pb2 as pb

log = logging.getLogger("bench")

REPO_ROOT: Final[Path] = Path(__file__).resolve().parents[1]
SERVICE_NAME: Final[str] = pb.DESCRIPTOR.services_by_name["AvailabilityService"].full_name


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_settings(
    broker_url: str,
    redis_url: str,
    data_dir: Path,
    partitions: int,
    worker_batch_bytes: int | None,
) -> Settings:
    """Settings with the development broker's overrides (unless set in the environment)
    and a unique topic prefix, so that runs never see each other's topics or keys; the
    run's credential is ``token`` (``loadtests.credentials``)."""
    key, spec = bench_credential()
    values: dict[str, Any] = {
        key.removeprefix(ENV_PREFIX).lower(): value
        for key, value in DEV_OVERRIDES.items()
        if key.startswith(ENV_PREFIX) and key not in os.environ
    }
    if worker_batch_bytes is not None:
        values["producer_max_batch_size"] = worker_batch_bytes
    values.update(
        broker=broker_url,
        redis_url=redis_url,
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
        partitions=partitions,
        data_dir=str(data_dir),
        http_port=free_port(),
        grpc_port=free_port(),
        auth_api_keys=[spec],
        token=key,
    )
    return Settings(**values)


@dataclass
class Service:
    name: str
    proc: Any  # subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class Stack:
    """What the benchmark started, so that exactly that is stopped again."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.broker: DevBroker | None = None
        self.redis_proc: Any = None  # subprocess.Popen[bytes] | None
        self.services: list[Service] = []
        self.loads: list[LoadProcess] = []
        self.settings: Settings | None = None

    def start_service(
        self, name: str, module: str, settings: Settings, extra_env: Mapping[str, str] | None = None
    ) -> Service:
        """``python -m module`` with ``settings`` (and ``extra_env``, e.g. the secrets
        that settings name by their environment variable)."""
        log_path = self.log_dir / f"{name}.log"
        log_file = log_path.open("ab")
        proc = popen_child(
            [sys.executable, "-m", module],
            env=process_env(settings, extra_env),
            stdout=log_file,
            cwd=REPO_ROOT,
        )
        service = Service(name, proc, log_path, log_file)
        self.services.append(service)
        log.info("started %s (python -m %s, pid %d, log %s)", name, module, proc.pid, log_path)
        return service

    def check_alive(self) -> None:
        """BenchError with the log's tail if a service process has exited."""
        for service in self.services:
            code = service.proc.poll()
            if code is not None:
                raise BenchError(f"{service.name} exited with code {code}:\n{service.tail()}")

    def start_load(
        self,
        name: str,
        role: Callable[[Any, Connection[Message, Message]], Coroutine[Any, Any, None]],
        job: Any,
    ) -> LoadProcess:
        load = LoadProcess(name, role, job, self.check_alive)
        self.loads.append(load)
        return load

    def shutdown(self) -> None:
        for load in reversed(self.loads):
            load.stop()
        self.loads.clear()
        for service in reversed(self.services):
            code = stop_child_process(service.proc, 10.0)
            service.log_file.close()
            log.info("stopped %s (exit %s)", service.name, code)
        self.services.clear()
        if self.settings is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                removed = delete_keys(self.settings)
                log.info("deleted %d Redis keys %s:*", removed, self.settings.redis_key_prefix)
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
            log.info("stopped the broker")
        if self.redis_proc is not None:
            stop_child_process(self.redis_proc, 5.0)
            self.redis_proc = None
            log.info("stopped the Redis server it had started")


def delete_keys(settings: Settings) -> int:
    """Deletes this run's serving, status and counter keys (never anything else)."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        keys = list(client.scan_iter(match=f"{settings.redis_key_prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        return len(keys)
    finally:
        client.close()


async def wait_serving(target: str, alive: Callable[[], None], timeout: float) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        # Through the channel: the type stubs of HealthStub do not declare Check.
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                answer = await check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            alive()
            if time.monotonic() > deadline:
                raise BenchError(f"the gRPC server was not SERVING within {timeout:.0f} s")
            await asyncio.sleep(0.2)


async def send_all(
    producer: AIOKafkaProducer,
    topic: str | Callable[[dict[str, Any]], str],
    events: Iterable[dict[str, Any]],
) -> int:
    """Start ``producer``, send ``events`` keyed by SKU to ``topic`` (or to
    ``topic(event)``), wait for every ack, stop it; returns how many it sent."""
    await producer.start()
    try:
        deliveries = [
            await producer.send(
                topic if isinstance(topic, str) else topic(event),
                orjson.dumps(event),
                key=event["sku"].encode(),
            )
            for event in events
        ]
        await producer.flush()
        await asyncio.gather(*deliveries)
        return len(deliveries)
    finally:
        await producer.stop()


def read_counter(settings: Settings, name: bytes) -> int:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        value = client.hget(f"{settings.redis_key_prefix}:counters", name)
        return int(value) if value is not None else 0
    finally:
        client.close()


def folded_count(client: redis.Redis, settings: Settings) -> int:
    """The events the worker has handled: folded or sent to the dead-letter topic."""
    counters: dict[bytes, bytes] = client.hgetall(f"{settings.redis_key_prefix}:counters")  # type: ignore[assignment]
    return sum(
        int(value)
        for name, value in counters.items()
        if name.startswith((b"folded:", b"dead_letters:"))
    )


def worker_statuses(settings: Settings) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        raw = client.hgetall(f"{settings.redis_key_prefix}:workers")
        return [orjson.loads(value) for value in raw.values()]
    finally:
        client.close()
