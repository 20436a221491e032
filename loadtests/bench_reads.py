"""The read measurements of ``python -m loadtests.bench``: HTTP single and batch reads
of the service against the bare ASGI baseline (wrk), then gRPC ``GetAvailability``
against the bare ``grpc.aio`` baseline (h2load), interleaved rounds of each pair."""

from __future__ import annotations

import asyncio
import logging
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc

from infra.config import Settings
from infra.topics import create_topics
from loadtests.bench_cli import BenchError
from loadtests.bench_measure import CpuMeter
from loadtests.bench_params import GRPC_GET_METHOD, Params
from loadtests.bench_stack import Service, Stack, bench_settings, delete_keys, free_port
from loadtests.credentials import bearer, grpc_metadata
from loadtests.http_load import LoadRun, run_h2load_grpc, run_wrk
from loadtests.serving import seed_serving, stop_services_since, wait_http
from loadtests.workload import sku_name
from services.grpc.gen.availability.v1 import availability_pb2 as pb

log = logging.getLogger("bench")


def _read_pair(
    stack: Stack,
    params: Params,
    kind: str,
    targets: Mapping[str, tuple[str, Service]],
    run_once: Callable[[str, int], LoadRun],
) -> dict[str, Any]:
    """``params.read_rounds`` rounds of each target in turn (interleaved), same load:
    ``run_once(address, round)`` is one run of the load generator."""
    runs: dict[str, list[LoadRun]] = {name: [] for name in targets}
    cpu: dict[str, list[float]] = {name: [] for name in targets}
    for round_ in range(params.read_rounds):
        for name, (address, service) in targets.items():
            meter = CpuMeter({"server": service.proc.pid})
            meter.start()
            result = run_once(address, round_)
            cpu[name].append(meter.stop()["cpu_percent"]["server"])
            runs[name].append(result)
            log.info(
                "read %s, %s: %.0f req/s, p99 %.2f ms",
                kind,
                name,
                result.rate,
                result.p99_ms,
            )
            if result.errors:
                raise BenchError(f"{name}: {result.errors} failed {kind} requests")
    summary: dict[str, Any] = {"connections": params.read_connections}
    for name, results in runs.items():
        summary[name] = {
            "runs": [r.summary() for r in results],
            "requests_per_second": round(sum(r.rate for r in results) / len(results)),
            "p50_ms": round(max(r.p50_ms for r in results), 3),
            "p99_ms": round(max(r.p99_ms for r in results), 3),
            "server_cpu_percent": cpu[name],
        }
    summary["ratio"] = round(
        summary["service"]["requests_per_second"] / summary["baseline"]["requests_per_second"], 3
    )
    return summary


def _wrk_runs(params: Params, kind: str, authorization: str) -> Callable[[str, int], LoadRun]:
    def run_once(url: str, round_: int) -> LoadRun:
        return run_wrk(
            url,
            kind=kind,
            authorization=authorization,
            skus=params.skus,
            connections=params.read_connections,
            seconds=params.read_seconds,
            seed=params.seed + round_,
        )

    return run_once


def measure_reads(stack: Stack, params: Params) -> dict[str, Any]:
    """HTTP single and batch reads of the service against the bare ASGI baseline."""
    assert stack.broker is not None
    data_root = Path(tempfile.mkdtemp(prefix="reads-", dir=stack.log_dir))
    settings = bench_settings(
        stack.broker.url, params.redis_url, data_root, params.partitions, None
    )
    stack.settings = settings
    already_running = len(stack.services)
    try:
        asyncio.run(create_topics(settings))
        asyncio.run(seed_serving(settings, params.skus, params.locations))
        log.info("reads: %d serving records written", params.skus)
        baseline_settings = settings.model_copy(update={"http_port": free_port()})
        service = stack.start_service("http", "services.http", settings)
        baseline = stack.start_service(
            "http-baseline", "loadtests.baseline_asgi", baseline_settings
        )
        targets = {
            "service": (f"http://127.0.0.1:{settings.http_port}", service),
            "baseline": (f"http://127.0.0.1:{baseline_settings.http_port}", baseline),
        }
        authorization = bearer(settings.token.get_secret_value())
        for url, _ in targets.values():
            wait_http(f"{url}/v1/availability/{sku_name(0)}", stack, authorization=authorization)
            run_wrk(
                url,
                kind="single",
                skus=params.skus,
                connections=4,
                seconds=2,
                seed=0,
                authorization=authorization,
            )
        single_runs = _wrk_runs(params, "single", authorization)
        single = _read_pair(stack, params, "single", targets, single_runs)
        batch = _read_pair(
            stack, params, "batch", targets, _wrk_runs(params, "batch", authorization)
        )
        # p99 at half the service's throughput: each connection pauses between requests.
        rate = single["service"]["requests_per_second"] / 2
        delay_ms = 5
        url, server = targets["service"]
        connections = max(1, math.ceil(rate * delay_ms / 1000))
        probe = run_wrk(
            url,
            kind="single",
            skus=params.skus,
            connections=connections,
            seconds=2,
            seed=params.seed,
            delay_ms=delay_ms,
            authorization=authorization,
        )
        # A request cycle is the pause plus the request's own time: calibrate on it.
        connections = max(1, round(connections * rate / max(probe.rate, 1.0)))
        meter = CpuMeter({"server": server.proc.pid})
        meter.start()
        half = run_wrk(
            url,
            kind="single",
            skus=params.skus,
            connections=connections,
            seconds=params.read_seconds,
            seed=params.seed,
            delay_ms=delay_ms,
            authorization=authorization,
        )
        if half.errors:
            raise BenchError(f"service: {half.errors} failed requests at half load")
        log.info("read at half load: %.0f req/s, p99 %.2f ms", half.rate, half.p99_ms)
        half_cpu = meter.stop()["cpu_percent"]["server"]
        stop_services_since(stack, already_running)  # the HTTP servers: CPU for gRPC's
        return {
            "single": single,
            "batch": batch,
            "single_half_load": {
                **half.summary(),
                "target_requests_per_second": round(rate),
                "connections": connections,
                "server_cpu_percent": half_cpu,
            },
            "grpc_get": measure_grpc_reads(stack, params, settings),
        }
    finally:
        stop_services_since(stack, already_running)
        delete_keys(settings)
        stack.settings = None


def grpc_answer(
    address: str, request: bytes, stack: Stack, token: str, timeout: float = 60.0
) -> bytes:
    """The serialized answer of ``GetAvailability`` at ``address``, once it serves."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(GRPC_GET_METHOD)
        while True:
            try:
                answer: bytes = call(request, timeout=2, metadata=grpc_metadata(token))
                return answer
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise BenchError(f"{address}: GetAvailability failed: {exc}") from exc
            stack.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"gRPC at {address} did not answer within {timeout:.0f} s")
            time.sleep(0.2)


def measure_grpc_reads(stack: Stack, params: Params, settings: Settings) -> dict[str, Any]:
    """gRPC ``GetAvailability`` of the service against the bare ``grpc.aio`` baseline,
    loaded by h2load (one SKU: see ``loadtests.http_load``)."""
    already_running = len(stack.services)
    try:
        targets = {}
        for name, module in (("service", "services.grpc"), ("baseline", "loadtests.baseline_grpc")):
            own = settings.model_copy(update={"grpc_port": free_port()})
            server = stack.start_service(f"grpc-{name}", module, own)
            targets[name] = (f"127.0.0.1:{own.grpc_port}", server)
        sku = sku_name(params.skus // 2)
        request = pb.GetAvailabilityRequest(sku=sku).SerializeToString()
        token = settings.token.get_secret_value()
        answers = {
            name: grpc_answer(address, request, stack, token)
            for name, (address, _) in targets.items()
        }
        if answers["service"] != answers["baseline"]:
            raise BenchError("the gRPC service and its baseline answer differently")
        for address, _ in targets.values():
            run_h2load_grpc(
                address,
                GRPC_GET_METHOD,
                request,
                connections=4,
                seconds=2,
                authorization=bearer(token),
            )

        def run_once(address: str, round_: int) -> LoadRun:
            return run_h2load_grpc(
                address,
                GRPC_GET_METHOD,
                request,
                connections=params.read_connections,
                seconds=params.read_seconds,
                authorization=bearer(token),
            )

        result = _read_pair(stack, params, "grpc get", targets, run_once)
        return {**result, "sku": sku, "answer_bytes": len(answers["service"])}
    finally:
        stop_services_since(stack, already_running)
