"""The FastAPI application: ``create_app(settings)``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from infra.config import Settings, get_settings
from infra.rules_log import RulesLog
from infra.store import AvailabilityStore
from services.http import routes_availability, routes_ops, routes_rules
from services.http.errors import install_error_handlers
from services.http.hot_reads import HotReads
from services.http.metrics import Metrics, MetricsMiddleware
from services.http.resources import RulesConnection, Services

log = logging.getLogger(__name__)

#: Start-up waits at most this long for the broker; then the rules log keeps
#: connecting in the background and /readyz reports it.
RULES_STARTUP_WAIT = 3.0

DESCRIPTION = """\
Real-time available-to-sell per SKU, location and sales channel, and the
safety-stock / channel-buffer rules that shape it.

Every error is `{"error": {"code": str, "message": str}}` with code
`invalid_argument` or `malformed_json` (400), `not_found` (404),
`method_not_allowed` (405), `scope_conflict` (409), `payload_too_large` (413),
`unavailable` (503)
or `internal` (500).
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    cfg = settings if settings is not None else get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = AvailabilityStore.from_url(
            cfg.redis_url, cfg.redis_key_prefix, cfg.redis_max_connections
        )
        rules = RulesConnection(RulesLog(cfg))
        try:
            await rules.start(wait=RULES_STARTUP_WAIT)
            app.state.services = Services(cfg, store, rules, metrics)
            yield
        finally:
            await rules.close()
            await store.close()

    app = FastAPI(
        title="Availability service",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(HotReads, metrics=metrics)  # outermost: see services.http.hot_reads
    install_error_handlers(app)
    app.include_router(routes_availability.router)
    app.include_router(routes_rules.router)
    app.include_router(routes_ops.router)
    return app
