"""Hostile request bodies to the live HTTP API: deeply nested, huge, not UTF-8. Each
gets a 400 with a short message; nothing answers 500 and the process lives on."""

from __future__ import annotations

import httpx

from infra.config import Settings
from tests.integration.conftest import StartService
from tests.integration.support import auth_headers, wait_http_ready


async def test_deeply_nested_and_hostile_bodies_get_400(
    settings: Settings, start_service: StartService
) -> None:
    api = start_service("services.http", settings)
    await wait_http_ready(settings.http_port, timeout=60, path="/healthz", process=api)
    deep = b"[" * 1000 + b"]" * 1000
    deeper = b"[" * 100_000 + b"]" * 100_000
    nested_object = b'{"a":' * 1000 + b"1" + b"}" * 1000
    bodies = {
        ("POST", "/v1/availability:batch"): [
            deep,
            deeper,
            b'{"skus": ' + deep + b"}",
            b'{"skus": ["A"], "channel": ' + nested_object + b"}",
            b'{"skus": [' + b'"A",' * 600 + b'"A"]}',
            b"\xff\xfe not utf-8",
        ],
        ("PUT", "/v1/rules/r1"): [
            deep,
            b'{"safety_stock": ' + deep + b"}",
            b'{"channel_buffers": ' + nested_object + b"}",
            b'{"channel_buffers": {"online": ' + deep + b"}}",
            b'{"sku": "' + b"A" * 100_000 + b'"}',
        ],
    }
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{settings.http_port}", headers=auth_headers(), timeout=30
    ) as client:
        for (method, path), cases in bodies.items():
            for body in cases:
                answer = await client.request(
                    method, path, content=body, headers={"content-type": "application/json"}
                )
                assert answer.status_code == 400, (path, body[:40], answer.text[:300])
                error = answer.json()["error"]
                assert error["code"] in ("invalid_argument", "malformed_json")
                assert len(error["message"]) < 1000, error["message"][:300]
    assert api.running
