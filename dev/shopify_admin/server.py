"""The stand-in's aiohttp application and how it is run.

aiohttp rather than Starlette/uvicorn: one library gives the server, the webhook
client, and the raw transport a "dropped connection" fault needs (abort the socket
mid-call), and the stand-in needs none of an ASGI framework's routing or validation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from dev.shopify_admin.bucket import PLANS
from dev.shopify_admin.control import add_routes
from dev.shopify_admin.endpoint import ADMIN_KEY, DOCUMENTS_KEY, STATE_KEY, graphql_handler
from dev.shopify_admin.model import Token
from dev.shopify_admin.prepare import Documents
from dev.shopify_admin.schema import AdminSchema, admin_schema, load_admin_schema
from dev.shopify_admin.state import StandInState

log = logging.getLogger("dev.shopify_admin")


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8710
    shop: str = "standin.myshopify.com"
    plan: str = "standard"
    bucket_size: float | None = None
    restore_rate: float | None = None
    access_token: str | None = field(default=None, repr=False)
    client_secret: str | None = field(default=None, repr=False)
    webhook_url: str | None = None
    fault_seed: int = 0
    schema_path: Path | None = None


def build_app(config: ServerConfig, admin: AdminSchema | None = None) -> web.Application:
    admin = admin or (
        load_admin_schema(config.schema_path) if config.schema_path else admin_schema()
    )
    state = StandInState(config.fault_seed)
    shop = state.shop(config.shop)
    maximum, rate = PLANS[config.plan]
    shop.shop.bucket.configure(
        config.bucket_size or maximum, config.restore_rate or rate, config.bucket_size or maximum
    )
    if config.access_token:
        state.add_token(config.shop, config.access_token, Token("default"))
    shop.webhooks.url = config.webhook_url
    shop.webhooks.secret = config.client_secret

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[STATE_KEY] = state
    app[ADMIN_KEY] = admin
    app[DOCUMENTS_KEY] = Documents(admin.schema)
    app.router.add_post("/admin/api/{version}/graphql.json", graphql_handler)
    add_routes(app)

    async def webhook_sender(app: web.Application) -> AsyncIterator[None]:
        await state.webhooks.start()
        yield
        await state.webhooks.close()

    app.cleanup_ctx.append(webhook_sender)
    return app


async def serve(config: ServerConfig, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or cancellation)."""
    app = build_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
    await site.start()
    print(
        f"shopify stand-in: listening on http://{config.host}:{config.port} "
        f"(Admin API at /admin/api/2026-10/graphql.json, control at /_standin/, "
        f"shop {config.shop})",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
