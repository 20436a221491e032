"""Dependencies of the routes: the shared resources set up by the app's lifespan.

They are ``async`` on purpose: FastAPI runs plain ``def`` dependencies in a thread pool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from infra.config import Settings
from infra.store import AvailabilityStore
from services.http.metrics import Metrics
from services.http.resources import RulesConnection, Services


def services_of(request: Request) -> Services:
    services = getattr(request.app.state, "services", None)
    if not isinstance(services, Services):
        raise RuntimeError("the app's lifespan has not run: no services")
    return services


async def get_services(request: Request) -> Services:
    return services_of(request)


async def get_store(request: Request) -> AvailabilityStore:
    return services_of(request).store


async def get_rules(request: Request) -> RulesConnection:
    return services_of(request).rules


async def get_settings(request: Request) -> Settings:
    return services_of(request).settings


async def get_metrics(request: Request) -> Metrics:
    return services_of(request).metrics


ServicesDep = Annotated[Services, Depends(get_services)]
StoreDep = Annotated[AvailabilityStore, Depends(get_store)]
RulesDep = Annotated[RulesConnection, Depends(get_rules)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
