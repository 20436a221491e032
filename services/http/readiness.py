"""The checks behind ``GET /readyz``: Redis answers, the rules log is caught up with
the broker, the stream processor is up and caught up, and the serving layer is
complete (not being rebuilt after Redis lost its data: ``streams.rebuild``).

``GET /readyz/local`` is this replica's own part of that: it can answer (its Redis
answers). It is the pod's readiness probe in Kubernetes: a worker rebalance, a
lagging processor or a serving layer being rebuilt after Redis lost its data make
``/readyz`` fail on every replica at once, and taking every replica out of its
Service then would turn a slower figure, or a clear 503 for the records not yet
rewritten, into no answer at all (README "Helm chart").

``/readyz`` is open (the kubelet and load balancers call it without a credential), so
a check's answer names what failed, never the exception behind it (host names,
addresses, library messages): that goes to the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from infra.config import Settings
from infra.store import AvailabilityStore
from services.http.resources import RulesConnection, describe

log = logging.getLogger(__name__)

OK = "ok"
#: Each check gives up after this long (a probe must answer quickly).
CHECK_TIMEOUT = 1.0


def assess_workers(workers: Mapping[str, Mapping[str, Any]], max_lag: int) -> str:
    """``ok``, or why the stream processor does not count as up and caught up."""
    if not workers:
        return "no stream-processor worker has reported recently"
    problems: list[str] = []
    for worker_id, status in sorted(workers.items()):
        rebuilding = status.get("rebuilding")
        if rebuilding:
            problems.append(
                f"worker {worker_id} is rewriting the serving records of partitions {rebuilding}"
            )
            continue
        if status.get("recovered") is not True:
            problems.append(f"worker {worker_id} is still recovering its state")
            continue
        lag = status.get("lag")
        if not isinstance(lag, int | float) or isinstance(lag, bool):
            problems.append(f"worker {worker_id} reports no lag")
        elif lag > max_lag:
            problems.append(f"worker {worker_id} is {lag} events behind (at most {max_lag})")
    return "; ".join(problems) or OK


async def check_redis(store: AvailabilityStore) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            return OK if await store.ping() else "Redis did not answer PING"
    except TimeoutError:
        return f"Redis did not answer within {CHECK_TIMEOUT:g} s"
    except Exception as exc:
        log.warning("readiness: Redis unreachable: %s", describe(exc))
        return "Redis unreachable"


async def check_serving(store: AvailabilityStore) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            layer = await store.serving_layer()
    except TimeoutError:
        return "serving layer state unknown: Redis did not answer in time"
    except Exception as exc:
        log.warning("readiness: serving layer state unknown: %s", describe(exc))
        return "serving layer state unknown: Redis unreachable"
    return OK if layer.complete else f"serving layer {layer.describe()}"


async def check_broker(rules: RulesConnection) -> str:
    if not rules.started:
        # RulesConnection logs each failed attempt with its reason.
        return "rules log not connected to the broker"
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await rules.log.sync(timeout=CHECK_TIMEOUT)
    except TimeoutError:
        return f"rules log not caught up with the broker within {CHECK_TIMEOUT:g} s"
    except Exception as exc:
        log.warning("readiness: broker unreachable: %s", describe(exc))
        return "broker unreachable"
    return OK


async def check_processor(store: AvailabilityStore, settings: Settings) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            workers = await store.workers(max_age=settings.worker_status_max_age)
    except TimeoutError:
        return "worker status unknown: Redis did not answer in time"
    except Exception as exc:
        log.warning("readiness: worker status unknown: %s", describe(exc))
        return "worker status unknown: Redis unreachable"
    return assess_workers(workers, settings.ready_max_lag)


async def readiness(
    store: AvailabilityStore, rules: RulesConnection, settings: Settings
) -> dict[str, str]:
    redis_state, broker_state, processor_state, serving_state = await asyncio.gather(
        check_redis(store),
        check_broker(rules),
        check_processor(store, settings),
        check_serving(store),
    )
    return {
        "redis": redis_state,
        "broker": broker_state,
        "processor": processor_state,
        "serving": serving_state,
    }


async def local_readiness(store: AvailabilityStore) -> dict[str, str]:
    """The checks of ``/readyz/local``: what this replica needs to answer. Not the
    serving layer's completeness: that is the same for every replica (README "Helm
    chart"), and while it is rebuilt each record already rewritten is served."""
    return {"redis": await check_redis(store)}
