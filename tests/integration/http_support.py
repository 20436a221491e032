"""Serving the HTTP API in the test's event loop, for the HTTP tests."""

from __future__ import annotations

import asyncio
import time

import uvicorn

from infra.config import Settings
from services.http import create_app


async def serve_app(settings: Settings) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=settings.http_port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        if task.done():
            task.result()
            raise AssertionError("the server stopped during start-up")
        assert time.monotonic() < deadline, "the server did not start within 30 s"
        await asyncio.sleep(0.02)
    return server, task
