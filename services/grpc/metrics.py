"""Prometheus metrics of the gRPC server, served on ``AVAILABILITY_GRPC_METRICS_PORT``.

- ``availability_grpc_requests_total{method,code}`` and
  ``availability_grpc_request_duration_seconds{method}`` (unary calls: until the
  answer; ``WatchAvailability``: until the stream ends), from ``MetricsInterceptor``;
- ``availability_grpc_open_watches``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from services.http.metrics import LATENCY_BUCKETS

SERVICE_PREFIX = "/availability.v1."


class GrpcMetrics:
    def __init__(self, open_watches: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "availability_grpc_requests",
            "gRPC calls answered, by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "availability_grpc_request_duration_seconds",
            "Time to answer a gRPC call (a watch: how long the stream lasted)",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        watches = Gauge(
            "availability_grpc_open_watches",
            "WatchAvailability streams open",
            registry=self.registry,
        )
        watches.set_function(open_watches)

    def observe(self, method: str, code: str, seconds: float) -> None:
        self.requests.labels(method, code).inc()
        self.duration.labels(method).observe(seconds)

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)


def _code(context: Any, default: str) -> str:
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else default


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Times and counts the calls of ``availability.v1`` services."""

    def __init__(self, metrics: GrpcMetrics) -> None:
        self.metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        name: str = handler_call_details.method
        if handler is None or not name.startswith(SERVICE_PREFIX):
            return handler
        method = name.rsplit("/", 1)[-1]
        observe = self.metrics.observe
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                start = time.perf_counter()
                code = "OK"
                try:
                    return await inner(request, context)
                except BaseException:
                    code = _code(context, "UNKNOWN")
                    raise
                finally:
                    observe(method, code, time.perf_counter() - start)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            # grpc.aio's streaming handlers are async generators (the stubs say Iterator).
            stream: Any = handler.unary_stream

            async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
                start = time.perf_counter()
                code = "OK"
                try:
                    async for message in stream(request, context):
                        yield message
                except BaseException:
                    code = _code(context, "CANCELLED")
                    raise
                finally:
                    observe(method, code, time.perf_counter() - start)

            return grpc.unary_stream_rpc_method_handler(
                streaming,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
