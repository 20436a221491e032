"""``python -m loadtests.baseline_asgi``: the read benchmark's bare baseline.

A raw ASGI callable, no framework, served by ``services.http.serve`` (the service's
uvicorn settings) on ``AVAILABILITY_HTTP_PORT``. It does the service's Redis reads
with the service's store and returns the same bytes: ``GET /v1/availability/{sku}``
(optional ``?channel=``) and ``POST /v1/availability:batch``. It validates nothing
and answers no error but 404: it is the floor the service is compared with, not a
server to use.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from availability.identifiers import DEFAULT_CHANNEL
from infra.config import get_settings
from infra.records import batch_items, render_answer
from infra.store import AvailabilityStore
from services.http.__main__ import serve

PATH_PREFIX = "/v1/availability/"
BATCH_PATH = "/v1/availability:batch"
_JSON = (b"content-type", b"application/json")


class BaselineApp:
    def __init__(self, redis_url: str, prefix: str, max_connections: int) -> None:
        self._args = (redis_url, prefix, max_connections)
        self.store: AvailabilityStore | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        assert self.store is not None
        path: str = scope["path"]
        status, body = 404, b'{"error":{"code":"not_found","message":"no such path"}}'
        if scope["method"] == "GET" and path.startswith(PATH_PREFIX):
            sku = path[len(PATH_PREFIX) :]
            query: bytes = scope["query_string"]
            channel = query[len(b"channel=") :].decode() if query else DEFAULT_CHANNEL
            tail = await self.store.read_tail(sku, channel)
            if tail is not None:
                status, body = 200, render_answer(sku, channel, tail)
        elif scope["method"] == "POST" and path == BATCH_PATH:
            request = orjson.loads(await _body(receive))
            skus, channel = request["skus"], request.get("channel", DEFAULT_CHANNEL)
            tails = await self.store.read_tails(skus, channel)
            status, body = 200, batch_items(skus, channel, tails)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), _JSON],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.store = AvailabilityStore.from_url(*self._args)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.store is not None:
                    await self.store.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def main() -> None:
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper())
    app = BaselineApp(settings.redis_url, settings.redis_key_prefix, settings.redis_max_connections)
    serve(app, settings.http_port, settings.log_level, host="127.0.0.1")


if __name__ == "__main__":
    main()
