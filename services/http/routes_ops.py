"""Operations: ``/healthz`` (the process is up), ``/readyz`` (Redis, broker and stream
processor reachable and caught up), ``/readyz/local`` (this replica can answer reads:
its Kubernetes readiness probe) and ``/metrics`` (Prometheus text)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from services.auth.scopes import METRICS_READ
from services.http import schemas
from services.http.access import OPEN, requires
from services.http.deps import ServicesDep
from services.http.errors import UNAVAILABLE
from services.http.readiness import CHECK_TIMEOUT, OK, local_readiness, readiness
from services.http.resources import describe
from services.http.responses import error_body, json_response

log = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])

_HEALTHY = b'{"status":"ok"}'


@router.get(
    "/healthz",
    summary="Liveness: the process is up",
    response_model=None,
    openapi_extra=OPEN,
    responses={200: {"model": schemas.Health, "description": "Up"}},
)
async def healthz() -> Response:
    return Response(_HEALTHY, media_type="application/json")


@router.get(
    "/readyz",
    summary="Readiness: Redis, the broker and the stream processor are up and caught up",
    response_model=None,
    openapi_extra=OPEN,
    responses={
        200: {"model": schemas.Readiness, "description": "Ready"},
        503: {"model": schemas.NotReady, "description": "Not ready; `checks` says why"},
    },
)
async def readyz(services: ServicesDep) -> Response:
    return _answer(await readiness(services.store, services.rules, services.settings))


@router.get(
    "/readyz/local",
    summary="Readiness of this replica: its Redis answers and the serving layer is complete",
    description="What this replica needs to answer reads, without the cluster-wide checks"
    " of `/readyz` (broker, stream processor): a Kubernetes readiness probe, so that a"
    " worker rebalance does not take every replica out of service.",
    response_model=None,
    openapi_extra=OPEN,
    responses={
        200: {"model": schemas.Readiness, "description": "Ready"},
        503: {"model": schemas.NotReady, "description": "Not ready; `checks` says why"},
    },
)
async def readyz_local(services: ServicesDep) -> Response:
    return _answer(await local_readiness(services.store))


def _answer(checks: dict[str, str]) -> Response:
    failed = {name: state for name, state in checks.items() if state != OK}
    if not failed:
        return json_response({"status": "ready", "checks": checks})
    message = "not ready: " + "; ".join(f"{name}: {state}" for name, state in failed.items())
    return json_response(
        {**error_body(UNAVAILABLE, message), "status": "not_ready", "checks": checks}, 503
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="Open unless `AVAILABILITY_HTTP_METRICS_OPEN=false`; then the"
    " `metrics:read` scope is needed.",
    response_model=None,
    openapi_extra=requires(METRICS_READ),
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Text format"}},
)
async def metrics(services: ServicesDep) -> Response:
    store = services.store
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            counts = await store.counts()
            workers = await store.workers(max_age=services.settings.worker_status_max_age)
            drift = await store.drift()
    except Exception as exc:  # Redis down: still serve the process's own metrics
        log.warning("metrics: cannot read Redis (%s)", describe(exc))
        counts, workers, drift = {}, {}, None
    services.metrics.serving.update(counts, workers, drift)
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
