"""What the routes share: the settings, the Redis store, the rules log, the audit
trail and metrics.

The rules log needs the broker. ``RulesConnection`` starts it, and with it the
audit trail's reader and relay (``infra.audit``, ``infra.audit_relay``), without
holding up the API's start-up for long: while the broker cannot be reached it keeps
trying in the background, rules operations answer 503 and ``/readyz`` says why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from aiokafka.errors import KafkaError

from infra.audit import AuditLog
from infra.config import Settings
from infra.push_policy_log import PushPolicyLog
from infra.rules_log import RulesLog
from infra.store import AvailabilityStore
from services.http.errors import ApiError
from services.http.metrics import Metrics

log = logging.getLogger(__name__)

#: Longest a rules request waits for the broker before it answers 503.
RULES_OPERATION_TIMEOUT = 10.0


def describe(exc: BaseException) -> str:
    """``Name: message`` of an exception, for logs and 503 bodies."""
    name = type(exc).__name__
    text = str(exc)
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"


class Startable(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class RulesConnection:
    """Starts ``RulesLog`` (then its ``companions``, in order) and retries until all
    have started (or ``close``)."""

    def __init__(
        self,
        rules_log: RulesLog,
        companions: Sequence[Startable] = (),
        *,
        max_retry_interval: float = 10.0,
        attempt_timeout: float = 15.0,
    ) -> None:
        self.log = rules_log
        self.companions = tuple(companions)
        self.max_retry_interval = max_retry_interval
        self.attempt_timeout = attempt_timeout
        self.last_error: str | None = None
        self._started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        return self._started.is_set()

    async def start(self, wait: float) -> None:
        """Begin connecting; return once started or after ``wait`` seconds."""
        self._task = asyncio.create_task(self._connect(), name="rules-log-connect")
        try:
            await asyncio.wait_for(self._started.wait(), wait)
        except TimeoutError:
            log.warning(
                "rules log not started within %.0f s (%s); retrying in the background",
                wait,
                self.last_error or "broker slow to answer",
            )

    async def _connect(self) -> None:
        retry_interval = 0.5
        while True:
            try:
                async with asyncio.timeout(self.attempt_timeout):
                    await self.log.start()
                    for companion in self.companions:
                        await companion.start()
            except Exception as exc:  # the broker cannot be reached (yet)
                self.last_error = describe(exc)
                log.info("rules log: start failed (%s); retrying", self.last_error)
                await self._stop_log()  # release what the failed attempt opened
                await asyncio.sleep(retry_interval)
                retry_interval = min(2 * retry_interval, self.max_retry_interval)
                continue
            self.last_error = None
            self._started.set()
            log.info("rules log started")
            return

    async def _stop_log(self) -> None:
        for client in (*reversed(self.companions), self.log):
            try:
                await client.stop()
            except Exception as exc:
                log.warning(
                    "rules log: stopping %s failed: %s", type(client).__name__, describe(exc)
                )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._stop_log()

    @asynccontextmanager
    async def operation(self, what: str) -> AsyncIterator[RulesLog]:
        """The started rules log for one request; broker trouble becomes 503."""
        if not self.started:
            # The reason is in the log (each failed attempt), not in the answer.
            raise ApiError.unavailable(f"the broker cannot be reached: {what} failed")
        try:
            async with asyncio.timeout(RULES_OPERATION_TIMEOUT):
                yield self.log
        except TimeoutError:
            message = f"the broker did not answer in time: {what} failed"
            raise ApiError.unavailable(message) from None
        except (KafkaError, OSError) as exc:
            log.warning("rules log: %s failed: %s", what, describe(exc))
            raise ApiError.unavailable(f"the broker cannot be reached: {what} failed") from None


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    store: AvailabilityStore
    rules: RulesConnection
    metrics: Metrics
    audit: AuditLog
    push_policies: PushPolicyLog | None = None
