"""The audit trail of rule changes, with real API processes and the development
broker: who, when, which request, before and after; it survives a restart of every
process and a kill -9 of the API that made the change."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from infra.config import Settings
from infra.kafka import read_topic
from services.auth.api_keys import new_api_key
from services.auth.scopes import RULES_READ, RULES_WRITE
from tests.integration.conftest import StartService
from tests.integration.support import (
    ProcessHandle,
    api_key_spec,
    auth_headers,
    free_port,
    wait_http_ready,
)

PLANNER_KEY = new_api_key()
AUDITOR_KEY = new_api_key()


def audited_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "auth_api_keys": [
                *settings.auth_api_keys,
                api_key_spec(PLANNER_KEY, (RULES_WRITE,), "planner-app"),
                api_key_spec(AUDITOR_KEY, (RULES_READ,), "auditor"),
            ]
        }
    )


async def start_api(start_service: StartService, settings: Settings) -> ProcessHandle:
    process = start_service("services.http", settings, name="api")
    await wait_http_ready(settings.http_port, timeout=60, path="/healthz", process=process)
    return process


def client(settings: Settings, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{settings.http_port}", headers=auth_headers(key), timeout=30
    )


async def history(settings: Settings, rule_id: str, expected: int) -> list[dict[str, Any]]:
    """The rule's history once it holds ``expected`` changes (the relay may trail)."""
    deadline = time.monotonic() + 60
    async with client(settings, AUDITOR_KEY) as auditor:
        while True:
            answer = await auditor.get(f"/v1/rules/{rule_id}/history")
            if answer.status_code == 200 and len(answer.json()["history"]) >= expected:
                entries: list[dict[str, Any]] = answer.json()["history"]
                return entries
            assert answer.status_code in (200, 404, 503), answer.text
            assert time.monotonic() < deadline, answer.text
            await asyncio.sleep(0.5)


def actions(entries: Sequence[dict[str, Any]]) -> list[tuple[str, str, Any, Any]]:
    return [(e["actor"]["subject"], e["action"], e["before"], e["after"]) for e in entries]


async def test_every_rule_change_is_recorded_with_who_when_and_before_after(
    settings: Settings, start_service: StartService
) -> None:
    settings = audited_settings(settings)
    await start_api(start_service, settings)
    async with client(settings, PLANNER_KEY) as planner:
        first = await planner.put(
            "/v1/rules/default", json={"safety_stock": 2}, headers={"X-Request-Id": "req-1"}
        )
        assert first.status_code == 200, first.text
        assert first.headers["X-Request-Id"] == "req-1"
        second = await planner.put("/v1/rules/default", json={"safety_stock": 3})
        generated = second.headers["X-Request-Id"]
        assert len(generated) == 32
        same = await planner.put("/v1/rules/default", json={"safety_stock": 3})
        assert same.status_code == 200  # no change: nothing to record
        assert (await planner.delete("/v1/rules/default")).status_code == 204
        # The planner may write but not read the history (rules:read or rules:write).
        assert (await planner.get("/v1/rules/default/history")).status_code == 200
    entries = await history(settings, "default", 3)
    rule = {"rule_id": "default", "sku": None, "location_id": None, "channel_buffers": None}
    assert actions(entries) == [
        ("planner-app", "rule.put", None, {**rule, "safety_stock": 2}),
        ("planner-app", "rule.put", {**rule, "safety_stock": 2}, {**rule, "safety_stock": 3}),
        ("planner-app", "rule.delete", {**rule, "safety_stock": 3}, None),
    ]
    assert [e["actor"]["request_id"] for e in entries[:2]] == ["req-1", generated]
    assert all(e["actor"]["kind"] == "api_key" for e in entries)
    assert entries[0]["at"] <= entries[1]["at"] <= entries[2]["at"]
    # The topic itself: one partition, each change once.
    records = await read_topic(settings, settings.audit_topic)
    ids = [orjson.loads(r.value)["audit_id"] for r in records]
    assert len(ids) == len(set(ids)) == 3
    async with client(settings, AUDITOR_KEY) as auditor:
        assert (await auditor.get("/v1/rules/never/history")).status_code == 404
        assert (await auditor.put("/v1/rules/x", json={})).status_code == 403


async def test_the_audit_survives_restarts_and_a_killed_api(
    settings: Settings, start_service: StartService
) -> None:
    settings = audited_settings(settings)
    api = await start_api(start_service, settings)
    async with client(settings, PLANNER_KEY) as planner:
        for stock in (1, 2):
            answer = await planner.put("/v1/rules/r1", json={"safety_stock": stock})
            assert answer.status_code == 200
    assert len(await history(settings, "r1", 2)) == 2
    # A change, and the API killed at once: its relay may not have recorded it.
    async with client(settings, PLANNER_KEY) as planner:
        assert (await planner.put("/v1/rules/r1", json={"safety_stock": 9})).status_code == 200
    api.kill()
    api.wait(10)
    # Another API (another port, as a replica would be) becomes the relay.
    replica = settings.model_copy(update={"http_port": free_port()})
    await start_api(start_service, replica)
    entries = await history(replica, "r1", 3)
    assert [e["after"]["safety_stock"] for e in entries] == [1, 2, 9]
    assert [e["before"] and e["before"]["safety_stock"] for e in entries] == [None, 1, 2]
    records = await read_topic(settings, settings.audit_topic)
    assert len({orjson.loads(r.value)["audit_id"] for r in records}) == 3
