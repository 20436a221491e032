"""What the HTTP API tests share: a served app with its client and store (fixture
``api``), seeded records built as the stream processor builds them, and the contract's
error shape."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from availability.ats import SkuAvailability, build_availability
from availability.events import event_from_dict
from availability.identifiers import parse_timestamp
from availability.rules import Rule, RuleBook, parse_rule
from availability.state import fold_all
from infra.config import Settings
from infra.store import AvailabilityStore
from tests.integration.http_support import serve_app
from tests.integration.scenario import seed_events
from tests.integration.support import (
    auth_headers,
    drop_keys,
    mark_serving_layer_complete,
)

NOW = parse_timestamp("2026-11-22T12:00:00Z")
SKU = "AB/12-x.y:z"  # '/' and ':' are valid in a SKU
OTHER_SKU = "SKU-2"


@dataclass
class Api:
    client: httpx.AsyncClient
    store: AvailabilityStore
    settings: Settings


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    server, task = await serve_app(settings)
    store = AvailabilityStore.from_url(settings.redis_url, settings.redis_key_prefix)
    await mark_serving_layer_complete(store, settings.partitions)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{settings.http_port}", timeout=20, headers=auth_headers()
        ) as client:
            yield Api(client, store, settings)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)
        await drop_keys(store)
        await store.close()


# --------------------------------------------------------------------------- seeding


def stock_events(sku: str) -> list[dict[str, Any]]:
    """Three locations: S1 (sale, damaged return, a reservation), W1 (ships to S2), S2."""
    return seed_events()


def rule(rule_id: str, **fields: Any) -> Rule:
    return parse_rule(rule_id, fields)


SEED_RULES = (
    rule("global", safety_stock=1, channel_buffers={"marketplace": 2}),
    rule("s2-specific", sku=SKU, location_id="S2", channel_buffers={"marketplace": 3}),
)


def availability_of(
    sku: str, events: Iterable[Mapping[str, Any]], rules: Sequence[Rule] = SEED_RULES
) -> SkuAvailability:
    state = fold_all(sku, [event_from_dict({**event, "sku": sku}) for event in events])
    return build_availability(state, RuleBook(rules), NOW)


async def seed(store: AvailabilityStore, *records: SkuAvailability) -> None:
    await store.write_records(list(records))


def error_of(response: httpx.Response) -> dict[str, str]:
    """The error object; fails unless the body is exactly the contract's error shape."""
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in response.text
    return dict(body["error"])
