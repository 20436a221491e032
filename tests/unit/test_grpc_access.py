"""Access control of the gRPC API (services.grpc.access), on an in-process server
whose store is not reachable: every RPC answers UNAUTHENTICATED without a credential
and PERMISSION_DENIED without its scope, before anything else; past the check a call
reaches its handler (and fails there for want of Redis). The integration tests do
the same against a live server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, cast

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from infra.config import ApiKeySpec, Settings
from infra.hold_checks import HoldChecks
from infra.reservation_store import ReservationStore
from infra.store import AvailabilityStore
from services.auth.api_keys import hash_api_key, new_api_key
from services.auth.authenticator import Authenticator
from services.auth.identity import Identity
from services.auth.scopes import ALL_SCOPES, AVAILABILITY_READ, AVAILABILITY_WATCH
from services.grpc import access as access_module
from services.grpc.access import (
    AVAILABILITY_SERVICE,
    CERTIFICATE_HOLDER,
    SERVICE_SCOPES,
    AccessControl,
    MethodAccess,
    UndeclaredAccess,
    caller,
)
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from services.grpc.metrics import GrpcMetrics
from services.grpc.server import AvailabilityService, create_server, service_handlers
from services.grpc.watch import WatchHub
from services.reservations.metrics import ReservationMetrics
from services.reservations.service import ReservationService
from services.webhooks.publisher import Publisher

SERVICE = AVAILABILITY_SERVICE.full_name
#: A valid request of every method (past the check it reaches Redis, which is absent).
REQUESTS: dict[str, Message] = {
    "GetAvailability": pb.GetAvailabilityRequest(sku="SKU-1"),
    "BatchGetAvailability": pb.BatchGetAvailabilityRequest(skus=["SKU-1"]),
    "WatchAvailability": pb.WatchAvailabilityRequest(skus=["SKU-1"]),
    "Reserve": pb.ReserveRequest(
        reservation_id="r-1",
        expires_in_s=60,
        lines=[pb.ReservationLine(sku="SKU-1", quantity=1)],
    ),
    "Release": pb.ReleaseRequest(reservation_id="r-1"),
    "GetReservation": pb.GetReservationRequest(reservation_id="r-1"),
    "ExtendReservation": pb.ExtendReservationRequest(reservation_id="r-1", expires_in_s=60),
}
NO_CREDENTIAL = "no credential: send 'Authorization: Bearer <token>'"


class Keys:
    """One key per scope, one with every scope, one with none."""

    def __init__(self) -> None:
        self.by_scope = {scope: new_api_key() for scope in ALL_SCOPES}
        self.every = new_api_key()
        self.none = new_api_key()
        self.specs = [
            ApiKeySpec(id=scope.replace(":", "-"), sha256=hash_api_key(key), scopes=(scope,))
            for scope, key in self.by_scope.items()
        ] + [
            ApiKeySpec(id="every", sha256=hash_api_key(self.every), scopes=ALL_SCOPES),
            ApiKeySpec(id="nothing", sha256=hash_api_key(self.none), scopes=()),
        ]


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@dataclass
class Server:
    channel: grpc.aio.Channel
    metrics: GrpcMetrics

    async def call(
        self, method: str, request: bytes, key: str | None = None
    ) -> tuple[grpc.StatusCode, str, int]:
        """(status, details, messages received) of a call of ``/SERVICE/method``."""
        metadata = (("authorization", f"Bearer {key}"),) if key else None
        path = method if method.startswith("/") else f"/{SERVICE}/{method}"
        if method == "WatchAvailability":
            stream = self.channel.unary_stream(path)(request, metadata=metadata, timeout=10)
            received = 0
            try:
                async for _ in stream:
                    received += 1
            except grpc.aio.AioRpcError as exc:
                return exc.code(), exc.details() or "", received
            return grpc.StatusCode.OK, "", received
        try:
            await self.channel.unary_unary(path)(request, metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or "", 0
        return grpc.StatusCode.OK, "", 1

    def refusals(self, code: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "availability_grpc_auth_refusals_total", {"code": code}
        )
        return value or 0.0


@pytest.fixture
async def serve(keys: Keys) -> AsyncIterator[Callable[..., Any]]:
    """``await serve(**settings)``: a started in-process server and a channel to it."""
    started: list[tuple[grpc.aio.Server, grpc.aio.Channel, AvailabilityStore, Publisher]] = []

    async def start(**fields: Any) -> Server:
        settings = Settings(auth_api_keys=keys.specs, **fields)
        store = AvailabilityStore.from_url("redis://127.0.0.1:1/0", "unit")  # nothing there
        hub = WatchHub(store, 10)
        metrics = GrpcMetrics(lambda: hub.open_count)
        publisher = Publisher(settings, "unit")  # never started: Redis fails first
        reservations = ReservationService(
            settings,
            ReservationStore(store),
            publisher,
            ReservationMetrics(metrics.registry, api="grpc"),
            HoldChecks(store, settings.partitions),
        )
        server, _, port = create_server(
            store,
            hub,
            settings,
            Authenticator.from_settings(settings),
            metrics,
            reservations,
            "127.0.0.1:0",
        )
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        started.append((server, channel, store, publisher))
        return Server(channel, metrics)

    yield start
    for server, channel, store, publisher in started:
        await channel.close()
        await server.stop(0)
        await publisher.close()
        await store.close()


def test_every_method_of_the_proto_declares_its_scope() -> None:
    """A new RPC cannot be served before it is given a scope here."""
    methods = {method.name for method in AVAILABILITY_SERVICE.methods}
    assert set(SERVICE_SCOPES) == methods
    assert all(any_of and any_of <= set(ALL_SCOPES) for any_of in SERVICE_SCOPES.values())
    table = MethodAccess.for_server(reflection=True)
    assert set(table.scopes) == {f"/{SERVICE}/{name}" for name in methods}
    unused = cast(Any, None)
    assert set(service_handlers(AvailabilityService(unused, unused, unused))) == methods


def test_a_method_without_a_scope_stops_the_server_from_being_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    forgotten = {k: v for k, v in SERVICE_SCOPES.items() if k != "WatchAvailability"}
    monkeypatch.setattr("services.grpc.access.SERVICE_SCOPES", forgotten)
    with pytest.raises(UndeclaredAccess, match="WatchAvailability declare"):
        MethodAccess.for_server(reflection=False)


async def test_every_rpc_refuses_without_credential_and_without_scope(
    keys: Keys, serve: Callable[..., Any]
) -> None:
    server: Server = await serve()
    for method, any_of in SERVICE_SCOPES.items():
        request = REQUESTS[method].SerializeToString()
        # No credential, an unknown key: UNAUTHENTICATED, and a watch sends nothing.
        for key, reason in ((None, NO_CREDENTIAL), ("avk_" + "x" * 43, "unknown API key")):
            code, details, received = await server.call(method, request, key)
            assert (code, details, received) == (grpc.StatusCode.UNAUTHENTICATED, reason, 0)
        # A credential without the scope: PERMISSION_DENIED, saying what is missing.
        code, details, received = await server.call(method, request, keys.none)
        assert code == grpc.StatusCode.PERMISSION_DENIED, method
        needed = " or ".join(sorted(any_of))
        assert details == f"the credential of 'nothing' lacks the scope this needs: {needed}"
        assert received == 0
        for scope in ALL_SCOPES:
            code, details, _ = await server.call(method, request, keys.by_scope[scope])
            if scope in any_of:
                # Past the check: the handler runs and finds no Redis.
                assert code == grpc.StatusCode.UNAVAILABLE, (method, scope, code, details)
            else:
                assert code == grpc.StatusCode.PERMISSION_DENIED, (method, scope)
    assert server.refusals("UNAUTHENTICATED") == 2 * len(SERVICE_SCOPES)
    # Per method: the scopeless key, and each key of a scope it does not take.
    denied = sum(1 + len(ALL_SCOPES) - len(any_of) for any_of in SERVICE_SCOPES.values())
    assert server.refusals("PERMISSION_DENIED") == denied


async def test_the_check_comes_before_the_request_is_read(
    keys: Keys, serve: Callable[..., Any]
) -> None:
    """Without a credential, bytes that are no request, and a request over the size
    limit, are UNAUTHENTICATED too; with one, they are what they are."""
    server: Server = await serve(grpc_max_receive_message_bytes=1024)
    garbage, oversized = b"\xff\xff\xff", pb.GetAvailabilityRequest(sku="x" * 2000)
    for request in (garbage, oversized.SerializeToString()):
        for method in SERVICE_SCOPES:
            code, _, _ = await server.call(method, request)
            assert code == grpc.StatusCode.UNAUTHENTICATED, method
    code, details, _ = await server.call("GetAvailability", garbage, keys.every)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a valid" in details
    code, _, _ = await server.call("GetAvailability", oversized.SerializeToString(), keys.every)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_unknown_methods_need_a_credential_then_are_unimplemented(
    keys: Keys, serve: Callable[..., Any]
) -> None:
    server: Server = await serve()
    for path in (f"/{SERVICE}/DeleteEverything", "/other.v1.Service/Call", "/nonsense"):
        code, details, _ = await server.call(path, b"")
        assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, NO_CREDENTIAL), path
        code, _, _ = await server.call(path, b"", keys.none)
        assert code == grpc.StatusCode.UNIMPLEMENTED, path


async def test_health_is_open_and_reflection_follows_its_setting(
    keys: Keys, serve: Callable[..., Any]
) -> None:
    for enabled in (True, False):
        server: Server = await serve(grpc_reflection=enabled)
        health = health_pb2_grpc.HealthStub(server.channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

        for metadata in (None, (("authorization", f"Bearer {keys.every}"),)):
            stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)
            call = stub.ServerReflectionInfo(metadata=metadata, timeout=5)
            if enabled:  # open: no credential needed
                await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
                await call.done_writing()
                listed = await call.read()
                assert isinstance(listed, reflection_pb2.ServerReflectionResponse)
                names = {s.name for s in listed.list_services_response.service}
                assert SERVICE in names
            else:  # an unknown method: a credential first, then UNIMPLEMENTED
                # Answered before the request is read, so nothing is written: a write
                # racing with the end of the call fails on the client with INTERNAL.
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call.read()
                assert refused.value.code() == (
                    grpc.StatusCode.UNIMPLEMENTED if metadata else grpc.StatusCode.UNAUTHENTICATED
                )


# --------------------------------------------------------------------------- the caller


class Echo:
    """Handlers that answer with the caller's subject, after letting other calls run."""

    async def unary(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        await asyncio.sleep(0.01)
        return caller(context).subject.encode()

    async def stream(
        self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        for _ in range(3):
            await asyncio.sleep(0.01)
            yield caller(context).subject.encode()


async def test_each_handler_sees_its_own_calls_identity(keys: Keys) -> None:
    """The context variable set by the interceptor reaches the handler of the same call,
    unary and streaming, and only it, with many calls of different callers in flight."""
    settings = Settings(auth_api_keys=keys.specs)
    echo = Echo()
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(echo.unary),
        "Stream": grpc.unary_stream_rpc_method_handler(echo.stream),
    }
    scopes = {"/echo.Echo/Unary": {AVAILABILITY_READ}, "/echo.Echo/Stream": {AVAILABILITY_WATCH}}
    access = MethodAccess({path: frozenset(s) for path, s in scopes.items()}, ())
    interceptor = AccessControl(
        Authenticator.from_settings(settings), access, GrpcMetrics(lambda: 0).auth_refusals
    )
    server = grpc.aio.server(interceptors=[interceptor])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("echo.Echo", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    callers = {"availability-read": keys.by_scope[AVAILABILITY_READ], "every": keys.every}
    watchers = {"availability-watch": keys.by_scope[AVAILABILITY_WATCH], "every": keys.every}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            unary, stream = (
                channel.unary_unary("/echo.Echo/Unary"),
                channel.unary_stream("/echo.Echo/Stream"),
            )

            async def ask(subject: str, key: str) -> None:
                answer = await unary(b"", metadata=(("authorization", f"Bearer {key}"),))
                assert answer == subject.encode()

            async def follow(subject: str, key: str) -> None:
                call = stream(b"", metadata=(("authorization", f"Bearer {key}"),))
                assert [m async for m in call] == [subject.encode()] * 3

            await asyncio.gather(
                *(ask(s, k) for _ in range(20) for s, k in callers.items()),
                *(follow(s, k) for _ in range(20) for s, k in watchers.items()),
            )
    finally:
        await server.stop(0)


class Context:
    """What ``caller`` reads of a call on a mutual-TLS connection."""

    def auth_context(self) -> dict[str, list[bytes]]:
        return {
            "transport_security_type": [b"ssl"],
            "x509_subject": [b"CN=terminal-0042,O=Store 17"],
            "x509_common_name": [b"terminal-0042"],
        }


def test_a_certificate_caller_is_named_by_its_subject() -> None:
    placeholder = Identity(CERTIFICATE_HOLDER, frozenset({AVAILABILITY_READ}), "client_certificate")
    token = access_module._caller.set(placeholder)
    try:
        identity = caller(cast(Any, Context()))
    finally:
        access_module._caller.reset(token)
    assert identity == Identity(
        "CN=terminal-0042,O=Store 17", frozenset({AVAILABILITY_READ}), "client_certificate"
    )
