"""``HotReads``: which requests it answers itself and which it hands to FastAPI."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from services.http.hot_reads import HotReads
from services.http.metrics import Metrics

TAIL = b'"ats":3,"locations":[]}'


class FakeStore:
    def __init__(self, tail: bytes | None = TAIL, fails: bool = False) -> None:
        self.tail = tail
        self.fails = fails
        self.reads: list[tuple[str, str]] = []

    async def read_tail(self, sku: str, channel: str) -> bytes | None:
        self.reads.append((sku, channel))
        if self.fails:
            raise RedisConnectionError("down")
        return self.tail


async def call(
    path: str, query: bytes = b"", method: str = "GET", store: FakeStore | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """(messages sent, whether the request went on to the inner app)."""
    passed_on = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        passed_on.append(scope)

    state = SimpleNamespace(services=SimpleNamespace(store=store or FakeStore()))
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query,
        "app": SimpleNamespace(state=state),
    }
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    await HotReads(inner, Metrics())(scope, receive, send)
    return sent, bool(passed_on)


async def test_a_plain_read_is_answered_with_the_stored_tail() -> None:
    store = FakeStore()
    sent, passed_on = await call("/v1/availability/A/1", b"channel=store", store=store)
    assert not passed_on
    assert store.reads == [("A/1", "store")]
    body = b'{"sku":"A/1","channel":"store",' + TAIL
    assert sent[0]["status"] == 200
    assert dict(sent[0]["headers"]) == {
        b"content-length": str(len(body)).encode(),
        b"content-type": b"application/json",
    }
    assert sent[1]["body"] == body


async def test_no_query_means_the_default_channel() -> None:
    store = FakeStore()
    await call("/v1/availability/A", store=store)
    assert store.reads == [("A", "online")]


@pytest.mark.parametrize(
    ("path", "query", "method"),
    [
        ("/v1/availability/A", b"channel=online&location_id=S1", "GET"),
        ("/v1/availability/A", b"location_id=S1", "GET"),
        ("/v1/availability/A", b"channel=%6Fnline", "GET"),
        ("/v1/availability/A", b"channel=Bad Channel", "GET"),
        ("/v1/availability/", b"", "GET"),
        ("/v1/availability/" + "x" * 129, b"", "GET"),
        ("/v1/availability/A", b"", "POST"),
        ("/v1/availability:batch", b"", "POST"),
        ("/v1/rules", b"", "GET"),
    ],
)
async def test_anything_else_goes_on_to_fastapi(path: str, query: bytes, method: str) -> None:
    store = FakeStore()
    sent, passed_on = await call(path, query, method, store)
    assert passed_on and not sent and not store.reads


async def test_unknown_sku_and_redis_failure_go_on_to_fastapi() -> None:
    for store in (FakeStore(tail=None), FakeStore(fails=True)):
        sent, passed_on = await call("/v1/availability/A", store=store)
        assert passed_on and not sent and store.reads == [("A", "online")]
