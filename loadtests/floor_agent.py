"""``python -m loadtests.floor_agent``: the framework's floor for the fold benchmark.

A Faust agent that consumes the same input topics as the stream worker, with the same
app class, consumer settings and batching, and does nothing with an event but decode
its JSON. Its rate is the most a Faust worker can fold on this broker and machine;
the benchmark reports the worker's rate as a fraction of it. It adds how many events
it decoded to the Redis hash ``{prefix}avail:floor`` (field ``decoded``) once per
heartbeat interval, as the worker does with its ``folded:*`` counters.
"""

from __future__ import annotations

import logging
from typing import Any

import faust
import orjson
import redis.asyncio as aioredis

from infra.config import get_settings
from streams.faust_app import build_app

FLOOR_FIELD = "decoded"


def floor_key(redis_key_prefix: str) -> str:
    return f"{redis_key_prefix}:floor"


def build_floor_app() -> faust.App:
    settings = get_settings()
    app = build_app(settings, f"{settings.faust_app_id}-floor")  # the worker's config
    source = app.topic(*settings.input_topics, key_serializer="raw", value_serializer="raw")
    redis_client = aioredis.Redis.from_url(settings.redis_url)
    key = floor_key(settings.redis_key_prefix)
    decoded = [0]

    @app.agent(source, name="decode-only")
    async def decode_only(stream: Any) -> None:
        async for batch in stream.take_events(
            settings.fold_batch_size, within=settings.fold_batch_within
        ):
            for event in batch:
                orjson.loads(event.message.value)
            decoded[0] += len(batch)

    @app.timer(interval=settings.heartbeat_interval)  # type: ignore[untyped-decorator]
    async def report() -> None:
        count, decoded[0] = decoded[0], 0
        if count:
            await redis_client.hincrby(key, FLOOR_FIELD, count)

    return app


def main() -> None:
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper())
    app = build_floor_app()
    faust.Worker(app, loglevel=settings.log_level.upper()).execute_from_commandline()


if __name__ == "__main__":
    main()
