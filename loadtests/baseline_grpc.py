"""``python -m loadtests.baseline_grpc``: the gRPC read benchmark's bare baseline.

A ``grpc.aio`` server with one generic handler and no servicer class, health,
reflection or validation, on ``AVAILABILITY_GRPC_PORT``: ``GetAvailability`` (the
``sku`` and ``channel`` of the request, nothing else) does the service's Redis read
with the service's store and returns the same bytes, converted as the service does.
It is the floor the service is compared with, not a server to use.
"""

from __future__ import annotations

import asyncio
import gc
import logging

import grpc
import orjson

from availability.identifiers import DEFAULT_CHANNEL
from infra.config import get_settings
from infra.records import render_answer
from infra.store import AvailabilityStore
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from services.grpc.messages import availability_message
from services.grpc.server import SERVICE_NAME


def handlers(store: AvailabilityStore) -> grpc.GenericRpcHandler:
    async def get_availability(
        request: pb.GetAvailabilityRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.Availability:
        channel = request.channel or DEFAULT_CHANNEL
        tail = await store.read_tail(request.sku, channel)
        if tail is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "never seen")
        return availability_message(orjson.loads(render_answer(request.sku, channel, tail)))

    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "GetAvailability": grpc.unary_unary_rpc_method_handler(
                get_availability,
                request_deserializer=pb.GetAvailabilityRequest.FromString,
                response_serializer=pb.Availability.SerializeToString,
            )
        },
    )


async def serve() -> None:
    settings = get_settings()
    store = AvailabilityStore.from_url(
        settings.redis_url, settings.redis_key_prefix, settings.redis_max_connections
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handlers(store),))
    server.add_insecure_port(f"127.0.0.1:{settings.grpc_port}")
    await server.start()
    gc.collect()
    gc.freeze()  # as the service does after start-up
    try:
        await server.wait_for_termination()
    finally:
        await store.close()


def main() -> None:
    logging.basicConfig(level=get_settings().log_level.upper())
    asyncio.run(serve())


if __name__ == "__main__":
    main()
