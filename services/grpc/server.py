"""The gRPC server: ``availability.v1.AvailabilityService``, health and reflection.

Reads go through ``AvailabilityStore`` exactly as the HTTP API's do, so both APIs
give the same answers: ``GetAvailability`` joins the record's answer fragments (with a
``location_id``, reads that location's alone);
``BatchGetAvailability`` reads every tail in one round trip and answers an unknown
SKU with ``availability.ats.unknown_sku_view``. ``WatchAvailability`` streams are fed
by the process's ``WatchHub`` (``services.grpc.watch``). The reservation RPCs
(``services.grpc.reservations``) are served by the HTTP API's ``ReservationService``
with a publisher of this process's own.

Every call passes ``services.grpc.access`` first (a bearer token or, with mutual
TLS, a client certificate, and the method's scope); ``services.grpc.tls`` sets up TLS
and ``services.grpc.connections`` the keepalive and the size and concurrency limits.

Status codes: RESOURCE_EXHAUSTED while the server serves its maximum of calls at
once, then UNAUTHENTICATED / PERMISSION_DENIED before the request is read, then
INVALID_ARGUMENT for a bad field (the message names it) or bytes that are not the
request message, NOT_FOUND for a SKU never seen, UNAVAILABLE when Redis cannot be
reached (and, for a watch, when its subscription is lost, not confirmed in time, or
the server stops; for a read, when a SKU has no record while the serving layer is
being rebuilt, see ``streams.rebuild``), RESOURCE_EXHAUSTED past a watch limit (the
server's or the credential's), past the concurrent-call limit or for a request over
the size limit. Deadlines and client cancellation are honoured by ``grpc.aio``,
which cancels the handler's task (and so its Redis call) when either happens.

It binds ``[::]`` (all interfaces, IPv4 too), like the HTTP API binds ``0.0.0.0``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

import grpc
import orjson
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from availability.ats import unknown_sku_view
from infra.config import Settings, get_settings
from infra.hold_checks import HoldChecks
from infra.logs import configure_logging
from infra.probes import OK, LoopHeartbeat
from infra.records import render_answer
from infra.redis_client import REDIS_FAILURES, STORE_DOWN
from infra.reservation_store import ReservationStore
from infra.store import AvailabilityStore
from services.auth.authenticator import AuthConfigError, Authenticator
from services.grpc.access import AccessControl, MethodAccess, caller
from services.grpc.connections import ServerLimitsError, maximum_concurrent_rpcs, server_options
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from services.grpc.gen.availability.v1 import availability_pb2_grpc as pb_grpc
from services.grpc.messages import (
    InvalidArgument,
    Malformed,
    availability_message,
    batch_message,
    decoder,
    parse_batch,
    parse_get,
    parse_watch,
    watch_message,
)
from services.grpc.metrics import GrpcMetrics, timed, timed_stream
from services.grpc.reservations import ReservationRpcs
from services.grpc.tls import TlsConfigError, certificate_scopes, server_credentials
from services.grpc.watch import TooManyWatches, WatchClosed, WatchHub
from services.reservations.metrics import ReservationMetrics
from services.reservations.service import ReservationService
from services.webhooks.publisher import Publisher

log = logging.getLogger("services.grpc")

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["AvailabilityService"].full_name
HOST = "[::]"  # deliberate: see the module docstring
#: Seconds in-flight calls get to finish on SIGTERM/SIGINT before they are cancelled.
SHUTDOWN_GRACE = 5.0
#: Seconds between the Redis pings behind the health status.
HEALTH_INTERVAL = 1.0

REDIS_DOWN = STORE_DOWN
UNAVAILABLE_MESSAGE = "the serving store (Redis) cannot be reached"

GetContext = grpc.aio.ServicerContext[pb.GetAvailabilityRequest, pb.Availability]
BatchContext = grpc.aio.ServicerContext[
    pb.BatchGetAvailabilityRequest, pb.BatchGetAvailabilityResponse
]
WatchContext = grpc.aio.ServicerContext[pb.WatchAvailabilityRequest, pb.WatchAvailabilityResponse]


class AvailabilityService(ReservationRpcs, pb_grpc.AvailabilityServiceServicer):
    def __init__(
        self,
        store: AvailabilityStore,
        hub: WatchHub,
        reservations: ReservationService,
        metrics: GrpcMetrics | None = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.reservations = reservations
        self.metrics = metrics

    @timed
    async def GetAvailability(
        self, request: pb.GetAvailabilityRequest | Malformed, context: GetContext
    ) -> pb.Availability:
        try:
            sku, channel, location_id = parse_get(request)
        except InvalidArgument as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            if location_id is None:
                tail = await self.store.read_tail(sku, channel)
                if tail is not None:
                    return availability_message(orjson.loads(render_answer(sku, channel, tail)))
            else:
                tail = await self.store.read_location_tail(sku, channel, location_id)
                if tail is not None:
                    return availability_message(orjson.loads(render_answer(sku, channel, tail)))
            # No record: unknown, unless it may only not have been rewritten yet.
            incomplete = await self.store.incomplete_serving_layer()
        except REDIS_DOWN as exc:
            log.warning("redis unavailable during GetAvailability: %r", exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, UNAVAILABLE_MESSAGE)
        if incomplete is not None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, incomplete)
        await context.abort(grpc.StatusCode.NOT_FOUND, f"sku {sku!r} has never been seen")

    @timed
    async def BatchGetAvailability(
        self, request: pb.BatchGetAvailabilityRequest | Malformed, context: BatchContext
    ) -> pb.BatchGetAvailabilityResponse:
        try:
            skus, channel = parse_batch(request)
        except InvalidArgument as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            tails = await self.store.read_tails(skus, channel) if skus else []
            incomplete = await self.store.incomplete_serving_layer() if None in tails else None
        except REDIS_DOWN as exc:
            log.warning("redis unavailable during BatchGetAvailability: %r", exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, UNAVAILABLE_MESSAGE)
        if incomplete is not None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, incomplete)
        answers = [
            unknown_sku_view(sku)
            if tail is None
            else orjson.loads(render_answer(sku, channel, tail))
            for sku, tail in zip(skus, tails, strict=True)
        ]
        return batch_message(channel, answers)

    @timed_stream
    async def WatchAvailability(
        self, request: pb.WatchAvailabilityRequest | Malformed, context: WatchContext
    ) -> AsyncIterator[pb.WatchAvailabilityResponse]:
        try:
            skus, channel, location_ids, thresholds = parse_watch(request)
        except InvalidArgument as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        identity = caller(context)
        # Callers without a credential (AVAILABILITY_AUTH_REQUIRED=false) are one
        # "anonymous": a quota would cap them all together, so only the server's applies.
        owner = None if identity.kind == "anonymous" else identity
        try:
            watch = await self.hub.open(skus, channel, location_ids, owner, thresholds)
        except TooManyWatches as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except WatchClosed as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except REDIS_DOWN as exc:
            log.warning("redis unavailable during WatchAvailability: %r", exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, UNAVAILABLE_MESSAGE)
        # A cancelled call (client gone, deadline) cancels this generator at its
        # await or yield; the finally clause gives its subscriptions back.
        try:
            async for update in watch.updates():
                yield watch_message(update.answer, update.version, update.initial)
        except WatchClosed as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        finally:
            await self.hub.release(watch)


class ServingStatus:
    """The health status last set, readable from the probe server's thread: ``/readyz``
    on the metrics port answers what ``grpc.health.v1`` answers."""

    def __init__(self) -> None:
        self.state = "starting: Redis not checked yet"

    def check(self) -> str:
        return self.state


async def watch_redis(
    store: AvailabilityStore,
    health_servicer: health.aio.HealthServicer,
    status_seen: ServingStatus | None = None,
) -> None:
    """SERVING while Redis answers PING, NOT_SERVING while it does not."""
    serving: bool | None = None
    while True:
        try:
            up = await asyncio.wait_for(store.ping(), HEALTH_INTERVAL * 2)
        except REDIS_FAILURES:  # TimeoutError is an OSError
            up = False
        if up != serving:
            serving = up
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if up
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in ("", SERVICE_NAME):
                await health_servicer.set(name, status)
            if status_seen is not None:
                status_seen.state = OK if up else "NOT_SERVING: Redis does not answer"
            log.info("health: %s", "SERVING" if up else "NOT_SERVING (Redis does not answer)")
        await asyncio.sleep(HEALTH_INTERVAL)


#: The service's unary methods: name -> (request, response) message classes.
UNARY_METHODS: dict[str, tuple[type[Any], type[Any]]] = {
    "GetAvailability": (pb.GetAvailabilityRequest, pb.Availability),
    "BatchGetAvailability": (pb.BatchGetAvailabilityRequest, pb.BatchGetAvailabilityResponse),
    "Reserve": (pb.ReserveRequest, pb.ReserveResponse),
    "Release": (pb.ReleaseRequest, pb.ReleaseResponse),
    "GetReservation": (pb.GetReservationRequest, pb.Reservation),
    "ExtendReservation": (pb.ExtendReservationRequest, pb.Reservation),
}


def service_handlers(service: AvailabilityService) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """What the generated ``add_AvailabilityServiceServicer_to_server`` registers, with
    request decoders that hand bytes that do not parse to the handler as ``Malformed``
    (INVALID_ARGUMENT) instead of failing the call with UNKNOWN."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(service, name),
            request_deserializer=decoder(request),
            response_serializer=response.SerializeToString,
        )
        for name, (request, response) in UNARY_METHODS.items()
    }
    handlers["WatchAvailability"] = grpc.unary_stream_rpc_method_handler(
        service.WatchAvailability,
        request_deserializer=decoder(pb.WatchAvailabilityRequest),
        response_serializer=pb.WatchAvailabilityResponse.SerializeToString,
    )
    return handlers


def create_server(
    store: AvailabilityStore,
    hub: WatchHub,
    settings: Settings,
    authenticator: Authenticator,
    metrics: GrpcMetrics,
    reservations: ReservationService,
    address: str | None = None,
) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    """A server with the three services behind access control, bound to ``address``
    (default ``[::]:AVAILABILITY_GRPC_PORT``; not started). ``reservations`` serves the
    reservation RPCs (its publisher is the caller's to start and close).

    Raises ``TlsConfigError`` or ``ServerLimitsError`` for settings that cannot be used.
    """
    credentials = server_credentials(settings)
    access = AccessControl(
        authenticator,
        MethodAccess.for_server(reflection=settings.grpc_reflection),
        metrics.auth_refusals,
        certificate_scopes(settings),
    )
    server = grpc.aio.server(
        interceptors=[access],
        options=server_options(settings),
        maximum_concurrent_rpcs=maximum_concurrent_rpcs(settings),
    )
    handlers = service_handlers(AvailabilityService(store, hub, reservations, metrics))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.grpc_reflection:
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
    address = address or f"{HOST}:{settings.grpc_port}"
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    return server, health_servicer, port


def transport_name(settings: Settings) -> str:
    if not settings.grpc_tls_cert_file:
        return "plaintext"
    return "mutual TLS" if settings.grpc_tls_client_ca_file else "TLS"


async def serve(settings: Settings) -> None:
    authenticator = Authenticator.from_settings(settings)
    store = AvailabilityStore.for_settings(settings)
    hub = WatchHub(
        store,
        settings.grpc_max_watches,
        settings.grpc_max_watches_per_identity,
        settings.grpc_watch_subscribe_timeout,
    )
    metrics = GrpcMetrics(lambda: hub.open_count)
    publisher = Publisher(settings, "grpc-reservations")
    reservations = ReservationService(
        settings,
        ReservationStore(store),
        publisher,
        ReservationMetrics(metrics.registry, api="grpc"),
        HoldChecks(store, settings.partitions),
    )
    heartbeat = LoopHeartbeat()
    status_seen = ServingStatus()
    try:
        server, health_servicer, port = create_server(
            store, hub, settings, authenticator, metrics, reservations
        )
    except BaseException:
        await store.close()
        raise
    if settings.grpc_metrics_port:
        try:
            metrics.serve(settings.grpc_metrics_port, heartbeat.check, status_seen.check)
            log.info("gRPC metrics on :%d/metrics, probes on /livez and /readyz",
                     settings.grpc_metrics_port)  # fmt: skip
        except OSError as exc:
            log.warning("gRPC metrics not served: port %d: %s", settings.grpc_metrics_port, exc)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await authenticator.start()
    publisher.start()
    await server.start()
    log.info("gRPC API listening on %s:%d (%s)", HOST, port, transport_name(settings))
    watcher = asyncio.create_task(watch_redis(store, health_servicer, status_seen))
    heartbeat.start()
    # Everything allocated so far lives as long as the process (see services.http).
    gc.collect()
    gc.freeze()
    try:
        await stop.wait()
        log.info("stopping: %.0f s for in-flight calls", SHUTDOWN_GRACE)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        status_seen.state = "shutting down"
        await health_servicer.enter_graceful_shutdown()
        # Watches never end by themselves: end them now, so clients reconnect to
        # another replica instead of waiting for the grace period.
        await hub.close("the server is shutting down; reconnect")
        await server.stop(SHUTDOWN_GRACE)
        await publisher.close()
        await authenticator.close()
        await store.close()
        log.info("stopped")


def main() -> None:
    settings = get_settings()
    configure_logging(settings)
    try:
        asyncio.run(serve(settings))
    except (AuthConfigError, TlsConfigError, ServerLimitsError) as exc:
        log.error("not started: %s", exc)
        raise SystemExit(2) from None
