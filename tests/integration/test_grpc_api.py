"""The gRPC API's unary calls (contract section 7) as a real process, compared with
the HTTP API over the same Redis records (``tests.integration.grpc_support``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from infra.config import Settings
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from services.grpc.gen.availability.v1 import availability_pb2_grpc as pb_grpc
from services.grpc.messages import availability_dict, batch_dict
from tests.integration.conftest import StartService
from tests.integration.grpc_support import (
    AUTH,
    OTHER_SKU,
    SERVICE,
    SKU,
    Apis,
    Stream,
    status_of,
)
from tests.integration.support import free_port

# --------------------------------------------------------------------------- answers


async def test_get_equals_http(apis: Apis) -> None:
    cases: list[tuple[str, str | None, str | None]] = [
        (SKU, None, None),
        (SKU, "online", None),
        (SKU, "marketplace", None),
        (SKU, "store", None),  # no rule names it: buffer 0
        (SKU, "marketplace", "S2"),
        (SKU, "online", "N1"),  # negative on hand
        (SKU, "online", "NOWHERE"),  # no state there: ats 0, no locations
        (OTHER_SKU, "marketplace", None),
    ]
    for sku, channel, location in cases:
        params = {k: v for k, v in {"channel": channel, "location_id": location}.items() if v}
        http = await apis.http.get(f"/v1/availability/{sku}", params=params)
        assert http.status_code == 200, http.text
        request = pb.GetAvailabilityRequest(sku=sku, channel=channel or "")
        if location is not None:
            request.location_id = location
        answer = await apis.stub.GetAvailability(request, timeout=5, metadata=AUTH)
        assert availability_dict(answer) == http.json(), (sku, channel, location)
    n1 = await apis.stub.GetAvailability(
        pb.GetAvailabilityRequest(sku=SKU, location_id="N1"), metadata=AUTH
    )
    assert n1.channel == "online" and n1.locations[0].on_hand == -2 and n1.ats == 0
    market = await apis.stub.GetAvailability(
        pb.GetAvailabilityRequest(sku=SKU, channel="marketplace"), metadata=AUTH
    )
    assert {loc.location_id: loc.buffer for loc in market.locations}["S2"] == 3


async def test_batch_equals_http(apis: Apis) -> None:
    skus = [SKU, "NOPE", OTHER_SKU, SKU]
    for channel in (None, "online", "marketplace"):
        body: dict[str, Any] = {"skus": skus}
        if channel is not None:
            body["channel"] = channel
        http = await apis.http.post("/v1/availability:batch", json=body)
        assert http.status_code == 200, http.text
        answer = await apis.stub.BatchGetAvailability(
            pb.BatchGetAvailabilityRequest(skus=skus, channel=channel or ""),
            timeout=5,
            metadata=AUTH,
        )
        assert batch_dict(answer) == http.json(), channel
        assert answer.channel == (channel or "online")
        unknown = answer.items[1]
        assert (unknown.sku, unknown.channel, unknown.ats, len(unknown.locations)) == (
            "NOPE", "", 0, 0,
        )  # fmt: skip
    empty = await apis.stub.BatchGetAvailability(pb.BatchGetAvailabilityRequest(), metadata=AUTH)
    assert batch_dict(empty) == {"channel": "online", "items": []}
    most = await apis.stub.BatchGetAvailability(
        pb.BatchGetAvailabilityRequest(skus=[SKU] * 500), metadata=AUTH
    )
    assert len(most.items) == 500


# --------------------------------------------------------------------------- errors


async def test_status_codes(apis: Apis) -> None:
    stub = apis.stub
    Get, Batch = pb.GetAvailabilityRequest, pb.BatchGetAvailabilityRequest
    code, message = await status_of(stub.GetAvailability(Get(sku="NOPE"), metadata=AUTH))
    assert code == grpc.StatusCode.NOT_FOUND and "NOPE" in message
    assert (await apis.http.get("/v1/availability/NOPE")).status_code == 404
    # NOT_FOUND with a location filter too, as HTTP.
    code, _ = await status_of(
        stub.GetAvailability(Get(sku="NOPE", location_id="S1"), metadata=AUTH)
    )
    assert code == grpc.StatusCode.NOT_FOUND

    invalid: list[tuple[Any, str]] = [
        (stub.GetAvailability(Get(), metadata=AUTH), "sku"),
        (stub.GetAvailability(Get(sku="bad sku"), metadata=AUTH), "sku"),
        (stub.GetAvailability(Get(sku="x" * 129), metadata=AUTH), "sku"),
        (stub.GetAvailability(Get(sku=SKU, channel="Online"), metadata=AUTH), "channel"),
        (stub.GetAvailability(Get(sku=SKU, location_id=""), metadata=AUTH), "location_id"),
        (stub.GetAvailability(Get(sku=SKU, location_id="a b"), metadata=AUTH), "location_id"),
        (stub.BatchGetAvailability(Batch(skus=[SKU, "ok", "bad sku"]), metadata=AUTH), "skus[2]"),
        (stub.BatchGetAvailability(Batch(skus=[SKU], channel="UP"), metadata=AUTH), "channel"),
        (stub.BatchGetAvailability(Batch(skus=[SKU] * 501), metadata=AUTH), "at most 500"),
    ]
    for call, field in invalid:
        code, message = await status_of(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (field, code, message)
        assert field in message, (field, message)
    assert apis.grpc_process.running


async def test_deadline_exceeded(apis: Apis) -> None:
    code, _ = await status_of(
        apis.stub.BatchGetAvailability(
            pb.BatchGetAvailabilityRequest(skus=[SKU] * 500), timeout=1e-4, metadata=AUTH
        )
    )
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server carries on.
    answer = await apis.stub.GetAvailability(
        pb.GetAvailabilityRequest(sku=SKU), timeout=5, metadata=AUTH
    )
    assert answer.sku == SKU


async def test_redis_down_is_unavailable(settings: Settings, start_service: StartService) -> None:
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    process = start_service("services.grpc", down)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{down.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                break
            except grpc.aio.AioRpcError:
                assert process.running and time.monotonic() < deadline, process.tail()
                await asyncio.sleep(0.1)
        assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
        # The probes on the metrics port: alive (the loop turns), not ready (no Redis).
        probes = f"http://127.0.0.1:{down.grpc_metrics_port}"
        async with httpx.AsyncClient(base_url=probes, timeout=5) as client:
            assert (await client.get("/livez")).status_code == 200
            ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["reason"] == "NOT_SERVING: Redis does not answer"
        stub = pb_grpc.AvailabilityServiceStub(channel)
        for call in (
            stub.GetAvailability(pb.GetAvailabilityRequest(sku=SKU), timeout=10, metadata=AUTH),
            stub.GetAvailability(
                pb.GetAvailabilityRequest(sku=SKU, location_id="S1"), timeout=10, metadata=AUTH
            ),
            stub.BatchGetAvailability(
                pb.BatchGetAvailabilityRequest(skus=[SKU]), timeout=10, metadata=AUTH
            ),
        ):
            code, message = await status_of(call)
            assert code == grpc.StatusCode.UNAVAILABLE and "Redis" in message
        for _ in range(2):  # the second time on a fresh subscription attempt
            watch = Stream(
                stub.WatchAvailability(
                    pb.WatchAvailabilityRequest(skus=[SKU]), timeout=20, metadata=AUTH
                )
            )
            code, message = await watch.status(timeout=25)
            assert code == grpc.StatusCode.UNAVAILABLE and "Redis" in message
        # Bad input is still INVALID_ARGUMENT, not UNAVAILABLE.
        code, _ = await status_of(
            stub.GetAvailability(pb.GetAvailabilityRequest(sku="a b"), metadata=AUTH)
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT


# --------------------------------------------------------------------------- health, reflection


async def test_health_and_reflection(apis: Apis) -> None:
    health = health_pb2_grpc.HealthStub(apis.channel)
    for service in ("", SERVICE):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

    stub = reflection_pb2_grpc.ServerReflectionStub(apis.channel)
    call = stub.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    listed = await call.read()
    await call.write(reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE))
    files = await call.read()
    await call.done_writing()
    assert isinstance(listed, reflection_pb2.ServerReflectionResponse)
    assert isinstance(files, reflection_pb2.ServerReflectionResponse)
    names = {s.name for s in listed.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    assert files.file_descriptor_response.file_descriptor_proto  # what grpcurl needs


async def test_sigterm_stops_gracefully(apis: Apis) -> None:
    apis.grpc_process.terminate(timeout=15)
    assert apis.grpc_process.returncode == 0, apis.grpc_process.tail()
    assert "stopped" in apis.grpc_process.log_text()


async def test_metrics_count_calls_by_method_and_code(apis: Apis, settings: Settings) -> None:
    stub = apis.stub
    assert (
        await stub.GetAvailability(pb.GetAvailabilityRequest(sku=SKU), metadata=AUTH)
    ).sku == SKU
    code, _ = await status_of(
        stub.GetAvailability(pb.GetAvailabilityRequest(sku="NOPE"), metadata=AUTH)
    )
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = await status_of(
        stub.GetAvailability(pb.GetAvailabilityRequest(sku="bad sku"), metadata=AUTH)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    await stub.BatchGetAvailability(
        pb.BatchGetAvailabilityRequest(skus=[SKU, OTHER_SKU]), metadata=AUTH
    )

    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{settings.grpc_metrics_port}/metrics")
        # The probes beside the metrics: the loop turns, and the health status is SERVING.
        probes = [
            await client.get(f"http://127.0.0.1:{settings.grpc_metrics_port}{path}")
            for path in ("/livez", "/readyz")
        ]
    assert [(p.status_code, p.json()) for p in probes] == [(200, {"status": "ok"})] * 2
    assert response.status_code == 200
    text = response.text
    for line in (
        'availability_grpc_requests_total{code="OK",method="GetAvailability"} 1.0',
        'availability_grpc_requests_total{code="NOT_FOUND",method="GetAvailability"} 1.0',
        'availability_grpc_requests_total{code="INVALID_ARGUMENT",method="GetAvailability"} 1.0',
        'availability_grpc_requests_total{code="OK",method="BatchGetAvailability"} 1.0',
        'availability_grpc_request_duration_seconds_count{method="GetAvailability"} 3.0',
        "availability_grpc_open_watches 0.0",
    ):
        assert line in text, line
