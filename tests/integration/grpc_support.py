"""Shared by the gRPC API tests: a seeded catalogue and the ``apis`` fixture (a real
``python -m services.grpc`` and ``python -m services.http`` over the same Redis).

Every call sends the test credential as gRPC metadata (``AUTH``, ``auth_metadata``);
the ``watch`` helper does so unless it is given other metadata.

Records are seeded the way the stream processor writes them: domain events folded
with ``availability.state``, ``build_availability`` with a ``RuleBook`` that has
channel buffers, ``AvailabilityStore.write_records``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from availability.ats import SkuAvailability, build_availability
from availability.events import event_from_dict
from availability.identifiers import parse_timestamp
from availability.rules import RuleBook, parse_rule
from availability.state import SkuState, fold
from infra.config import Settings
from infra.store import AvailabilityStore
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from services.grpc.gen.availability.v1 import availability_pb2_grpc as pb_grpc
from tests.integration.scenario import at_minute, seed_events
from tests.integration.support import (
    TEST_API_KEY,
    ProcessHandle,
    auth_headers,
    mark_serving_layer_complete,
    wait_http_ready,
)

if TYPE_CHECKING:  # conftest imports this module for its fixture
    from tests.integration.conftest import StartService

NOW = parse_timestamp("2026-11-22T12:00:00Z")
SKU = "AB/12-x.y:z"  # '/' and ':' are valid in a SKU
OTHER_SKU = "SKU-2"
SERVICE = "availability.v1.AvailabilityService"
Metadata = tuple[tuple[str, str], ...]


def auth_metadata(key: str = TEST_API_KEY) -> Metadata:
    """gRPC metadata carrying ``key`` as a bearer token."""
    return (("authorization", f"Bearer {key}"),)


#: The test credential (every scope), for every call of a test that is not about access.
AUTH: Metadata = auth_metadata()


def stock_events() -> list[dict[str, Any]]:
    """S1 (sale, damaged return, reservation), W1 ships to S2, S2; N1 sold below zero."""
    return [
        *seed_events(),
        {"type": "pos.sale", "event_id": "e8", "location_id": "N1", "quantity": 2,
         "occurred_at": at_minute(9)},
    ]  # fmt: skip


RULES = RuleBook(
    [
        parse_rule("global", {"safety_stock": 1, "channel_buffers": {"marketplace": 2}}),
        parse_rule("s2", {"sku": SKU, "location_id": "S2", "channel_buffers": {"marketplace": 3}}),
    ]
)


def availability_of(sku: str, events: Sequence[Mapping[str, Any]]) -> SkuAvailability:
    state = SkuState(sku)
    for event in events:
        fold(state, event_from_dict({**event, "sku": sku}))
    return build_availability(state, RULES, NOW)


@dataclass
class Apis:
    stub: pb_grpc.AvailabilityServiceStub
    channel: grpc.aio.Channel
    http: httpx.AsyncClient
    store: AvailabilityStore
    grpc_process: ProcessHandle


async def wait_serving(
    channel: grpc.aio.Channel, process: ProcessHandle, timeout: float = 30
) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=1)
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        assert process.running, f"grpc server exited:\n{process.tail()}"
        assert time.monotonic() < deadline, f"gRPC not SERVING in {timeout} s:\n{process.tail()}"
        await asyncio.sleep(0.1)


@pytest.fixture
async def apis(settings: Settings, start_service: StartService) -> AsyncIterator[Apis]:
    grpc_process = start_service("services.grpc", settings)
    http_process = start_service("services.http", settings)
    store = AvailabilityStore.from_url(settings.redis_url, settings.redis_key_prefix)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}")
    try:
        await wait_serving(channel, grpc_process)
        await wait_http_ready(settings.http_port, path="/healthz", process=http_process)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{settings.http_port}", timeout=20, headers=auth_headers()
        ) as http:
            await store.write_records(
                [
                    availability_of(SKU, stock_events()),
                    availability_of(OTHER_SKU, stock_events()[:2]),
                ]
            )
            await mark_serving_layer_complete(store, settings.partitions)
            yield Apis(pb_grpc.AvailabilityServiceStub(channel), channel, http, store, grpc_process)
    finally:
        await channel.close()
        await forget_store(store)


async def forget_store(store: AvailabilityStore) -> None:
    """Delete the test's Redis keys and close the store."""
    keys = [k async for k in store.client.scan_iter(match=f"{store.prefix}:*", count=1000)]
    if keys:
        await store.client.delete(*keys)
    await store.close()


async def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


Call = Any  # grpc.aio.UnaryStreamCall[pb.WatchAvailabilityRequest, pb.WatchAvailabilityResponse]


class Stream:
    """A watch call read by a task into a queue.

    Cancelling a pending ``call.read()`` would cancel the call itself, so "no
    message within t seconds" is asked of the queue, never of the call.
    """

    def __init__(self, call: Call) -> None:
        self.call = call
        self.queue: asyncio.Queue[pb.WatchAvailabilityResponse | grpc.aio.AioRpcError | None]
        self.queue = asyncio.Queue()
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            async for message in self.call:
                self.queue.put_nowait(message)
            self.queue.put_nowait(None)
        except grpc.aio.AioRpcError as exc:
            self.queue.put_nowait(exc)

    async def read(self, timeout: float = 10.0) -> pb.WatchAvailabilityResponse:
        # What has arrived counts even when the time is up (wait_for with a timeout
        # of 0 would not even look).
        if self.queue.empty():
            item = await asyncio.wait_for(self.queue.get(), timeout)
        else:
            item = self.queue.get_nowait()
        if isinstance(item, grpc.aio.AioRpcError):
            raise item
        assert item is not None, "the watch ended"
        return item

    async def read_initial(self, count: int) -> dict[str, pb.WatchAvailabilityResponse]:
        initial = {}
        for _ in range(count):
            message = await self.read()
            assert message.initial
            initial[message.availability.sku] = message
        return initial

    async def nothing_within(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        assert self.queue.empty(), self.queue.get_nowait()

    async def status(self, timeout: float = 10.0) -> tuple[grpc.StatusCode, str]:
        """The status the stream ends with (after any messages still queued)."""
        deadline = time.monotonic() + timeout
        while True:
            item = await asyncio.wait_for(self.queue.get(), deadline - time.monotonic())
            if isinstance(item, grpc.aio.AioRpcError):
                return item.code(), item.details() or ""
            assert item is not None, "the watch ended with OK"

    def cancel(self) -> None:
        self.call.cancel()

    async def close(self) -> None:
        self.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def watch(
    stub: pb_grpc.AvailabilityServiceStub,
    skus: Sequence[str],
    channel: str = "",
    location_ids: Sequence[str] = (),
    **kwargs: Any,
) -> Stream:
    request = pb.WatchAvailabilityRequest(skus=skus, channel=channel, location_ids=location_ids)
    kwargs.setdefault("metadata", AUTH)
    return Stream(stub.WatchAvailability(request, **kwargs))


class Relay:
    """A TCP relay to a local port that can fall silent: it then passes nothing on in
    either direction and keeps its sockets open, as the network of a terminal that
    vanished does (no FIN, no RST). It notes when the server closes its side."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.silent = False
        self.server_closed = asyncio.Event()
        self._listener: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._listener = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._listener.sockets[0].getsockname()[1])

    def fall_silent(self) -> None:
        self.silent = True

    async def _accept(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        server_in, server_out = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [client_out, server_out]
        for task in (
            self._pipe(client_in, server_out, server_side=False),
            self._pipe(server_in, client_out, server_side=True),
        ):
            running = asyncio.create_task(task)
            self._tasks.add(running)
            running.add_done_callback(self._tasks.discard)

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, server_side: bool
    ) -> None:
        with contextlib.suppress(OSError):
            # Silent: what arrives is read (so that the server's closing is seen) and
            # dropped.
            while data := await source.read(65536):
                if not self.silent:
                    sink.write(data)
                    await sink.drain()
        if server_side:
            self.server_closed.set()
        if not self.silent:
            sink.close()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in self._writers:
            writer.close()
