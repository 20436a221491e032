"""The FastAPI application: ``create_app(settings)``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from infra.audit import AuditLog
from infra.audit_relay import AuditRelay
from infra.config import Settings, get_settings
from infra.hold_checks import HoldChecks
from infra.push_policy_log import PushPolicyLog
from infra.reservation_store import ReservationStore
from infra.rules_log import RulesLog
from infra.store import AvailabilityStore
from services.auth.authenticator import Authenticator
from services.http import (
    routes_availability,
    routes_ops,
    routes_push_policies,
    routes_reservations,
    routes_rules,
    routes_webhooks,
)
from services.http.access import BEARER_SCHEME, OPEN, AccessTable, Authentication
from services.http.errors import install_error_handlers
from services.http.hot_reads import HotReads
from services.http.metrics import Metrics, MetricsMiddleware
from services.http.resources import RulesConnection, Services
from services.reservations.metrics import ReservationMetrics
from services.reservations.service import ReservationService
from services.webhooks.publisher import Publisher
from services.webhooks.receiver import WebhookMetrics, WebhookReceiver
from services.webhooks.shops import WebhookShops

log = logging.getLogger(__name__)

#: Start-up waits at most this long for the broker; then the rules log keeps
#: connecting in the background and /readyz reports it.
RULES_STARTUP_WAIT = 3.0

DESCRIPTION = """\
Real-time available-to-sell per SKU, location and sales channel, and the
safety-stock / channel-buffer rules that shape it.

Every call needs `Authorization: Bearer <token>` (an API key or an OAuth2
client-credentials JWT) whose scopes include what the operation names, except the
probes. Every error is `{"error": {"code": str, "message": str}}` with code
`invalid_argument` or `malformed_json` (400), `unauthenticated` (401),
`permission_denied` (403), `not_found` (404),
`method_not_allowed` (405), `scope_conflict`, `insufficient_stock`, `conflict` or
`not_active` (409), `payload_too_large` (413),
`unavailable` (503)
or `internal` (500).
"""


#: Served without a credential when AVAILABILITY_HTTP_DOCS is on.
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")


def create_app(settings: Settings | None = None) -> FastAPI:
    cfg = settings if settings is not None else get_settings()
    metrics = Metrics()
    authenticator = Authenticator.from_settings(cfg)
    webhook_shops = WebhookShops.from_settings(cfg)  # client secrets read once, here
    webhook_metrics = WebhookMetrics(metrics.registry)
    reservation_metrics = ReservationMetrics(metrics.registry, api="http")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = AvailabilityStore.for_settings(cfg)
        rules_log = RulesLog(cfg)
        push_policies = PushPolicyLog(cfg)
        audit = AuditLog(cfg, frozenset({"rule", PushPolicyLog.kind}))
        relay = AuditRelay(cfg, rules_log, push_policies)
        rules = RulesConnection(rules_log, [push_policies, audit, relay])
        webhooks = WebhookReceiver(cfg, webhook_shops, store, Publisher(cfg), webhook_metrics)
        reservation_publisher = Publisher(cfg, "reservations")
        reservations = ReservationService(
            cfg,
            ReservationStore(store),
            reservation_publisher,
            reservation_metrics,
            HoldChecks(store, cfg.partitions),
        )
        try:
            await authenticator.start()
            await rules.start(wait=RULES_STARTUP_WAIT)
            webhooks.start()
            reservation_publisher.start()
            app.state.services = Services(cfg, store, rules, metrics, audit, push_policies)
            setattr(app.state, routes_webhooks.STATE_ATTRIBUTE, webhooks)
            setattr(app.state, routes_reservations.STATE_ATTRIBUTE, reservations)
            yield
        finally:
            await reservation_publisher.close()
            await webhooks.close()
            await rules.close()
            await store.close()
            await authenticator.close()

    app = FastAPI(
        title="Availability service",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs" if cfg.http_docs else None,
        redoc_url="/redoc" if cfg.http_docs else None,
        openapi_url="/openapi.json" if cfg.http_docs else None,
    )
    install_error_handlers(app)
    app.include_router(routes_availability.router)
    app.include_router(routes_rules.router)
    app.include_router(routes_push_policies.router)
    app.include_router(routes_ops.router)
    app.include_router(routes_webhooks.router)
    app.include_router(routes_reservations.router)
    _document_bearer_scheme(app)
    table = AccessTable.from_app(
        app,
        open_paths=DOCS_PATHS if cfg.http_docs else (),
        overrides={"/metrics": OPEN} if cfg.http_metrics_open else {},
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(HotReads, metrics=metrics)  # see services.http.hot_reads
    # Outermost: no route, the hot read included, answers before the credential check.
    app.add_middleware(
        Authentication, authenticator=authenticator, table=table, refusals=metrics.refusals
    )
    return app


def _document_bearer_scheme(app: FastAPI) -> None:
    """The OpenAPI document names the bearer scheme that the routes' ``security`` uses."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                BEARER_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`avk_...`) or an OAuth2 client-credentials"
                    " JWT; the scopes each operation needs are listed in its `security`.",
                }
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
