"""Limits of the rules API, with clear errors: rules in total (AVAILABILITY_MAX_RULES)."""

from __future__ import annotations

import asyncio

import httpx

from infra.config import Settings
from tests.integration.http_support import serve_app
from tests.integration.support import auth_headers


async def test_rules_beyond_the_limit_are_refused_but_existing_ones_change(
    settings: Settings,
) -> None:
    limited = settings.model_copy(update={"max_rules": 2})
    server, task = await serve_app(limited)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{limited.http_port}", headers=auth_headers(), timeout=20
        ) as client:
            for rule_id, sku in (("a", "SKU-A"), ("b", "SKU-B")):
                answer = await client.put(f"/v1/rules/{rule_id}", json={"sku": sku})
                assert answer.status_code == 200, answer.text
            refused = await client.put("/v1/rules/c", json={"sku": "SKU-C"})
            assert refused.status_code == 409
            assert refused.json()["error"] == {
                "code": "limit_exceeded",
                "message": "2 rules exist, the most this deployment allows; delete one first",
            }
            # Replacing an existing rule is no new rule.
            changed = await client.put("/v1/rules/a", json={"sku": "SKU-A", "safety_stock": 1})
            assert changed.status_code == 200
            assert (await client.delete("/v1/rules/b")).status_code == 204
            assert (await client.put("/v1/rules/c", json={"sku": "SKU-C"})).status_code == 200
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)
