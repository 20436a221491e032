"""Quotas and connection hygiene of a live gRPC server: the watch quota per credential
beside the server's, watches given back when their connection closes (at once) or
falls silent (by keepalive, within its documented bound), and the limit of calls in
progress."""

from __future__ import annotations

import asyncio
import time

import grpc
import httpx

from infra.config import Settings
from services.auth.api_keys import new_api_key
from services.auth.scopes import AVAILABILITY_WATCH
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from services.grpc.gen.availability.v1 import availability_pb2_grpc as pb_grpc
from tests.integration.conftest import SettingsFactory, StartService
from tests.integration.grpc_support import (
    AUTH,
    SERVICE,
    Relay,
    Stream,
    auth_metadata,
    wait_serving,
    watch,
)
from tests.integration.support import ProcessHandle, api_key_spec

OTHER_KEY = new_api_key()


async def open_watches(process: ProcessHandle, settings: Settings) -> float:
    """``availability_grpc_open_watches`` of the server."""
    assert process.running, process.tail()
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{settings.grpc_metrics_port}/metrics")).text
    [line] = [line for line in text.splitlines() if line.startswith("availability_grpc_open_w")]
    return float(line.split()[-1])


async def opened_within(stub: pb_grpc.AvailabilityServiceStub, sku: str, seconds: float) -> Stream:
    """A watch of ``sku`` opened again and again until it gets its initial figures."""
    deadline = time.monotonic() + seconds
    while True:
        call = watch(stub, [sku])
        try:
            await call.read_initial(1)
            return call
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
            assert time.monotonic() < deadline, f"no watch within {seconds} s: {exc.details()}"
            await asyncio.sleep(0.05)


async def test_each_credential_has_a_watch_quota_given_back_when_its_connection_closes(
    settings_factory: SettingsFactory, start_service: StartService
) -> None:
    settings = settings_factory(
        grpc_max_watches_per_identity=2,
        grpc_max_watches=4,
        auth_api_keys=[api_key_spec(), api_key_spec(OTHER_KEY, (AVAILABILITY_WATCH,), "other")],
    )
    process = start_service("services.grpc", settings)
    target = f"127.0.0.1:{settings.grpc_port}"
    async with grpc.aio.insecure_channel(target) as channel:
        await wait_serving(channel, process)
        terminal = grpc.aio.insecure_channel(target)
        stub = pb_grpc.AvailabilityServiceStub(terminal)
        held = [watch(stub, ["Q-1"]), watch(stub, ["Q-2"])]
        for call in held:
            await call.read_initial(1)
        code, message = await watch(stub, ["Q-3"]).status()
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert message == (
            "the credential of 'tests' holds its quota of 2 watches per credential; close one first"
        )
        # Another credential has its own quota, within the server's limit of 4.
        other_stub = pb_grpc.AvailabilityServiceStub(channel)
        others = [watch(other_stub, [f"O-{i}"], metadata=auth_metadata(OTHER_KEY)) for i in (1, 2)]
        for call in others:
            await call.read_initial(1)
        code, message = await watch(other_stub, ["Q-4"]).status()
        assert (code, message) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED, "this server holds its maximum of 4 watches",
        )  # fmt: skip
        assert await open_watches(process, settings) == 4
        # The terminal's connection closes (FIN): its watches are given back at once.
        closed = time.monotonic()
        await terminal.close()
        again = await opened_within(other_stub, "Q-5", seconds=5)
        assert time.monotonic() - closed < 2.0  # (keepalive would take 40 s)
        await again.close()
        for call in others:
            await call.close()


async def test_a_vanished_terminal_gives_its_watch_back_by_keepalive(
    settings_factory: SettingsFactory, start_service: StartService
) -> None:
    """A terminal whose network vanishes (no FIN, no RST: a relay that falls silent)
    holds its watch until the server's keepalive ping goes unanswered: within
    keepalive time + timeout, not TCP's minutes."""
    keepalive, timeout = 2.0, 1.0
    settings = settings_factory(
        grpc_keepalive_time=keepalive,
        grpc_keepalive_timeout=timeout,
        grpc_max_watches_per_identity=1,
    )
    process = start_service("services.grpc", settings)
    relay = Relay(settings.grpc_port)
    relay_port = await relay.start()
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as direct,
            grpc.aio.insecure_channel(f"127.0.0.1:{relay_port}") as remote,
        ):
            await wait_serving(direct, process)
            terminal = watch(pb_grpc.AvailabilityServiceStub(remote), ["KA-1"])
            await terminal.read_initial(1)
            await asyncio.sleep(keepalive + 0.5)  # pings are answered while it is there
            stub = pb_grpc.AvailabilityServiceStub(direct)
            assert not relay.server_closed.is_set()
            code, _ = await watch(stub, ["KA-2"]).status()
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED  # the terminal holds the quota

            relay.fall_silent()
            silent = time.monotonic()
            replacement = await opened_within(stub, "KA-2", seconds=keepalive + timeout + 5)
            released = time.monotonic() - silent
            assert released < keepalive + timeout + 1.5, released
            assert relay.server_closed.is_set()  # the server closed the dead connection
            assert await open_watches(process, settings) == 1
            await replacement.close()
            await terminal.close()
    finally:
        await relay.close()


async def test_calls_in_progress_are_limited(
    settings_factory: SettingsFactory, start_service: StartService
) -> None:
    settings = settings_factory(grpc_max_watches=1, grpc_max_concurrent_rpcs=2)
    process = start_service("services.grpc", settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel:
        await wait_serving(channel, process)
        stub = pb_grpc.AvailabilityServiceStub(channel)
        held = watch(stub, ["C-1"])
        await held.read_initial(1)
        # A call whose request never comes stays in progress: the second of two. Once
        # the server has it, a third call is refused.
        pending = channel.stream_stream(f"/{SERVICE}/GetAvailability")(metadata=AUTH)
        request = pb.GetAvailabilityRequest(sku="C-1")
        deadline = time.monotonic() + 5
        while True:
            try:
                await stub.GetAvailability(request, metadata=AUTH, timeout=5)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    assert exc.details() == "Concurrent RPC limit exceeded!"
                    break
            assert time.monotonic() < deadline, "a third call in progress was served"
            await asyncio.sleep(0.05)
        pending.cancel()
        deadline = time.monotonic() + 5
        while True:  # the slot comes back once the server has seen the cancellation
            try:
                await stub.GetAvailability(request, metadata=AUTH, timeout=5)
            except grpc.aio.AioRpcError as exc:
                # Served: no such SKU (NOT_FOUND, or UNAVAILABLE while nothing marked
                # the serving layer complete).
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await held.close()
