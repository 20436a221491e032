"""The hot read, answered before FastAPI: ``GET /v1/availability/{sku}[?channel=..]``.

A storefront asks this on every product page view, and FastAPI's routing, request
and response objects cost more than the read itself (shared notes "read-path": a
FastAPI route serves about 40% of what a bare ASGI callable does). ``HotReads`` is
a pure ASGI middleware, outermost, that answers exactly the common case: a valid
SKU, no query parameter but a valid ``channel``, and a SKU that has a serving
record. It gives the same bytes, headers and metrics as the FastAPI route.

Every other request goes on to FastAPI unchanged, which answers it as before: other
paths and methods, ``location_id``, anything to validate or to refuse (400, 404, 405),
and a Redis failure (503; the route tries Redis again itself). So errors keep one
implementation, and the OpenAPI document still describes the route.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from availability.identifiers import DEFAULT_CHANNEL, is_channel, is_sku
from infra.records import render_answer
from infra.redis_client import REDIS_FAILURES
from services.http.metrics import Metrics

PATH_PREFIX = "/v1/availability/"
ROUTE = "/v1/availability/{sku}"  # the route template: the metrics label FastAPI gives it
_CHANNEL_PARAM = b"channel="
_HEADERS_START = [(b"content-type", b"application/json")]


class HotReads:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self._ok_total = metrics.requests.labels("GET", ROUTE, "200")
        self._duration = metrics.duration.labels("GET", ROUTE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if not path.startswith(PATH_PREFIX):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        sku = path[len(PATH_PREFIX) :]
        channel = _channel(scope["query_string"])
        services: Any = getattr(scope["app"].state, "services", None)
        if channel is None or services is None or not is_sku(sku):
            await self.app(scope, receive, send)
            return
        try:
            tail = await services.store.read_tail(sku, channel)
        except REDIS_FAILURES:
            tail = None  # the route answers 503 (or the record, if Redis is back)
        if tail is None:
            await self.app(scope, receive, send)
            return
        body = render_answer(sku, channel, tail)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    *_HEADERS_START,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        self._ok_total.inc()
        self._duration.observe(time.perf_counter() - start)


def _channel(query: bytes) -> str | None:
    """The channel a query string names: the default for none, None (not for the
    fast path) for anything but one valid ``channel=`` without escapes."""
    if not query:
        return DEFAULT_CHANNEL
    if not query.startswith(_CHANNEL_PARAM) or b"&" in query:
        return None
    channel = query[len(_CHANNEL_PARAM) :].decode("latin-1")
    return channel if is_channel(channel) else None
