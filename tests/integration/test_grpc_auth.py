"""Access control of a live gRPC server (``python -m services.grpc``): every RPC of
the service refuses a call without a credential (UNAUTHENTICATED) and one without the
method's scope (PERMISSION_DENIED) with the HTTP API's messages, a refused watch ends
before its first message, and API keys and JWTs holding the scope pass. Health stays
open, reflection follows its setting, and refusals are counted."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from infra.config import Settings
from infra.store import AvailabilityStore
from infra.topics import create_topics
from services.auth.api_keys import new_api_key
from services.auth.scopes import ALL_SCOPES, AVAILABILITY_READ, AVAILABILITY_WATCH
from services.grpc.access import AVAILABILITY_SERVICE, SERVICE_SCOPES
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from tests.integration.conftest import SettingsFactory, StartService
from tests.integration.grpc_support import (
    SERVICE,
    SKU,
    auth_metadata,
    availability_of,
    forget_store,
    stock_events,
    wait_serving,
)
from tests.integration.support import (
    api_key_spec,
    mark_serving_layer_complete,
    wait_http_ready,
)
from tests.jwt_issuer import AUDIENCE, ISSUER, Issuer

#: A valid request of every method of the service (a new method must be added here:
#: the test below fails until it is).
REQUESTS: dict[str, Message] = {
    "GetAvailability": pb.GetAvailabilityRequest(sku=SKU),
    "BatchGetAvailability": pb.BatchGetAvailabilityRequest(skus=[SKU]),
    "WatchAvailability": pb.WatchAvailabilityRequest(skus=[SKU]),
    # In this order: each call of a reservation method passes on the one reserved here.
    "Reserve": pb.ReserveRequest(
        reservation_id="auth-1", expires_in_s=60, lines=[pb.ReservationLine(sku=SKU, quantity=1)]
    ),
    "GetReservation": pb.GetReservationRequest(reservation_id="auth-1"),
    "ExtendReservation": pb.ExtendReservationRequest(reservation_id="auth-1", expires_in_s=60),
    "Release": pb.ReleaseRequest(reservation_id="auth-1"),
}


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    messages: int  # received before the status (a watch's, or a unary call's answer)


@dataclass
class LiveGrpc:
    channel: grpc.aio.Channel
    http: str
    keys: dict[str, str]  # scope -> a key holding only that scope
    scopeless: str
    issuer: Issuer
    settings: Settings

    async def call(self, method: str, request: Message, token: str | None) -> Outcome:
        """Call ``method`` with ``token`` as bearer (None: no credential). A watch is
        read until its first message, then cancelled (OK)."""
        metadata = auth_metadata(token) if token is not None else None
        path = f"/{SERVICE}/{method}"
        data = request.SerializeToString()
        if method == "WatchAvailability":
            call = self.channel.unary_stream(path)(data, metadata=metadata, timeout=10)
            received = 0
            try:
                async for _ in call:
                    received += 1
                    call.cancel()
                    break
            except grpc.aio.AioRpcError as exc:
                return Outcome(exc.code(), exc.details() or "", received)
            return Outcome(grpc.StatusCode.OK, "", received)
        try:
            await self.channel.unary_unary(path)(data, metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return Outcome(exc.code(), exc.details() or "", 0)
        return Outcome(grpc.StatusCode.OK, "", 1)

    async def http_refusal(self, token: str | None) -> tuple[int, str]:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(base_url=self.http, headers=headers) as client:
            answer = await client.get(f"/v1/availability/{SKU}")
        return answer.status_code, answer.json()["error"]["message"]


@pytest.fixture
async def live(
    settings_factory: SettingsFactory, start_service: StartService, tmp_path: Path
) -> AsyncIterator[LiveGrpc]:
    keys = {scope: new_api_key() for scope in ALL_SCOPES}
    scopeless = new_api_key()
    issuer = Issuer(tmp_path)
    settings: Settings = settings_factory(
        auth_api_keys=[
            *(api_key_spec(key, (scope,), scope.replace(":", "-")) for scope, key in keys.items()),
            api_key_spec(scopeless, (), "nothing"),
        ],
        auth_jwt_jwks_file=str(issuer.jwks),
        auth_jwt_issuer=ISSUER,
        auth_jwt_audience=AUDIENCE,
    )
    await create_topics(settings)  # Reserve publishes
    store = AvailabilityStore.from_url(settings.redis_url, settings.redis_key_prefix)
    await store.write_records([availability_of(SKU, stock_events())])
    await mark_serving_layer_complete(store, settings.partitions)
    grpc_process = start_service("services.grpc", settings)
    http_process = start_service("services.http", settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}")
    try:
        await wait_serving(channel, grpc_process)
        await wait_http_ready(settings.http_port, path="/healthz", process=http_process)
        http = f"http://127.0.0.1:{settings.http_port}"
        yield LiveGrpc(channel, http, keys, scopeless, issuer, settings)
    finally:
        await channel.close()
        await forget_store(store)


async def test_every_rpc_checks_credential_then_scope(live: LiveGrpc) -> None:
    assert set(REQUESTS) == {method.name for method in AVAILABILITY_SERVICE.methods}
    http_missing = await live.http_refusal(None)
    http_unknown = await live.http_refusal("avk_" + "x" * 43)
    assert [status for status, _ in (http_missing, http_unknown)] == [401, 401]
    for method, request in REQUESTS.items():
        needed = SERVICE_SCOPES[method]
        # Without a credential, or with an unknown one: the HTTP API's 401 messages.
        for token, (_, message) in ((None, http_missing), ("avk_" + "x" * 43, http_unknown)):
            outcome = await live.call(method, request, token)
            assert outcome == Outcome(grpc.StatusCode.UNAUTHENTICATED, message, 0), method
        # A credential without the scope: its 403 message.
        outcome = await live.call(method, request, live.scopeless)
        assert outcome.code == grpc.StatusCode.PERMISSION_DENIED, method
        assert outcome.messages == 0
        assert outcome.details == (
            "the credential of 'nothing' lacks the scope this needs: " + " or ".join(sorted(needed))
        )
        for scope, key in live.keys.items():
            outcome = await live.call(method, request, key)
            if scope in needed:
                assert outcome.code == grpc.StatusCode.OK, (method, scope, outcome)
                assert outcome.messages >= 1
            else:
                assert outcome.code == grpc.StatusCode.PERMISSION_DENIED, (method, scope)
    # The HTTP API says the same to the same scopeless credential.
    status, message = await live.http_refusal(live.scopeless)
    assert status == 403
    assert message == "the credential of 'nothing' lacks the scope this needs: availability:read"


async def test_jwt_bearer_tokens(live: LiveGrpc) -> None:
    get, watch = REQUESTS["GetAvailability"], REQUESTS["WatchAvailability"]
    reader = live.issuer.token(scope=AVAILABILITY_READ, sub="pos-fleet")
    assert (await live.call("GetAvailability", get, reader)).code == grpc.StatusCode.OK
    denied = await live.call("WatchAvailability", watch, reader)
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED and "'pos-fleet'" in denied.details
    terminal = live.issuer.token(scope=f"{AVAILABILITY_READ} {AVAILABILITY_WATCH}")
    watched = await live.call("WatchAvailability", watch, terminal)
    assert (watched.code, watched.messages) == (grpc.StatusCode.OK, 1)
    expired = live.issuer.token(scope=AVAILABILITY_READ, exp=int(time.time()) - 120)
    refused = await live.call("GetAvailability", get, expired)
    assert (refused.code, refused.details) == (
        grpc.StatusCode.UNAUTHENTICATED, "the token has expired",
    )  # fmt: skip
    assert (await live.http_refusal(expired)) == (401, "the token has expired")
    other_audience = live.issuer.token(scope=AVAILABILITY_READ, aud="another-api")
    refused = await live.call("GetAvailability", get, other_audience)
    assert refused.code == grpc.StatusCode.UNAUTHENTICATED


async def test_unknown_methods_need_a_credential_then_are_unimplemented(live: LiveGrpc) -> None:
    nope = live.channel.unary_unary(f"/{SERVICE}/DeleteEverything")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await nope(b"", timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await nope(b"", timeout=5, metadata=auth_metadata(live.scopeless))
    assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_health_is_open_and_refusals_are_counted(live: LiveGrpc) -> None:
    health = health_pb2_grpc.HealthStub(live.channel)
    for service in ("", SERVICE):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    get = REQUESTS["GetAvailability"]
    await live.call("GetAvailability", get, None)
    await live.call("WatchAvailability", REQUESTS["WatchAvailability"], None)
    await live.call("GetAvailability", get, live.scopeless)
    assert (await live.call("GetAvailability", get, live.keys[AVAILABILITY_READ])).messages == 1
    async with httpx.AsyncClient() as client:
        port = live.settings.grpc_metrics_port
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert 'availability_grpc_auth_refusals_total{code="UNAUTHENTICATED"} 2.0' in text
    assert 'availability_grpc_auth_refusals_total{code="PERMISSION_DENIED"} 1.0' in text
    # Refused calls reach no handler: only the accepted one is in the call counts.
    assert re.findall(r"availability_grpc_requests_total\{.*\} (\S+)", text) == ["1.0"]


async def list_services(channel: grpc.aio.Channel, metadata: Any = None) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(metadata=metadata, timeout=5)
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    await call.done_writing()
    listed = await call.read()
    assert isinstance(listed, reflection_pb2.ServerReflectionResponse)
    return {service.name for service in listed.list_services_response.service}


async def test_reflection_is_open_or_off(
    live: LiveGrpc, settings_factory: SettingsFactory, start_service: StartService
) -> None:
    assert SERVICE in await list_services(live.channel)  # on by default, no credential
    off = settings_factory(grpc_reflection=False)
    process = start_service("services.grpc", off)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{off.grpc_port}") as channel:
        await wait_serving(channel, process)
        for metadata, code in (
            (None, grpc.StatusCode.UNAUTHENTICATED),
            (auth_metadata(), grpc.StatusCode.UNIMPLEMENTED),
        ):
            # The server answers before the request is read: wait for its answer
            # without writing (a write that races with the end of the call fails on
            # the client's side with INTERNAL).
            call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                metadata=metadata, timeout=5
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call.read()
            assert refused.value.code() == code
