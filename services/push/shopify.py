"""One shop's GraphQL Admin API, as the push calls it.

Every call is paced by the shop's bucket as its answers describe it
(``availability.push_decision.BucketEstimate``): a call starts only when the bucket
holds its requested cost, counting the calls still under way. Retries keep the call's
variables, so a mutation's idempotency key is the same: THROTTLED waits the restore
time; HTTP 5xx, timeouts and dropped connections wait a jittered back-off. 401 and 403
raise :class:`TargetRefused` (the caller stops the target). The access token is sent
in ``X-Shopify-Access-Token`` and never logged.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import orjson

from availability.push_decision import BucketEstimate, backoff
from infra.secrets import SecretNotFound
from infra.shopify_config import ShopifyTarget
from services.push.metrics import PushMetrics

log = logging.getLogger(__name__)

THROTTLED: Final = "THROTTLED"
INTERNAL: Final = "INTERNAL_SERVER_ERROR"


class TargetRefused(Exception):
    """401/403 (or an unusable secret): the shop refuses us until someone acts."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class InternalError(Exception):
    """Shopify's INTERNAL_SERVER_ERROR: a mutation's key is spent, retry with a new one."""


class GraphQLFailure(Exception):
    """Errors Shopify returned for the document (a bug of ours, not a retryable state)."""


@dataclass
class Answer:
    data: dict[str, Any]
    cost: dict[str, Any] = field(default_factory=dict)


class ShopifyClient:
    def __init__(
        self,
        target: ShopifyTarget,
        metrics: PushMetrics,
        *,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.name = target.name
        self.metrics = metrics
        self.timeout = timeout
        self.clock = clock
        self.bucket = BucketEstimate()
        self.last_success: float | None = None  # wall clock
        self.throttled_seconds = 0.0
        self.failures: dict[str, int] = {}
        self._first = asyncio.Lock()  # calls wait for the first answer to learn the bucket
        self._session: aiohttp.ClientSession | None = None
        self._random = random.Random()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(limit=64),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def fail(self, kind: str, count: int = 1) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + count
        self.metrics.failures.labels(self.name, kind).inc(count)

    def _headers(self) -> dict[str, str]:
        try:
            token = self.target.access_token.read().get_secret_value()
        except SecretNotFound as exc:
            raise TargetRefused("no_token", str(exc)) from None
        return {"X-Shopify-Access-Token": token, "Content-Type": "application/json"}

    async def wait_ready(self, cost: float) -> None:
        """Until the bucket holds ``cost`` points beside the calls under way, so that
        a batch is composed as late as possible (and so holds as much as possible)."""
        while (wait := self.bucket.wait(cost, self.clock())) > 0:
            await asyncio.sleep(wait)

    async def _pace(self, cost: float) -> None:
        while True:
            wait = self.bucket.wait(cost, self.clock())
            if wait <= 0:
                self.bucket.reserve(cost)
                return
            await asyncio.sleep(wait)

    async def call(
        self, operation: str, document: str, variables: dict[str, Any], requested: int
    ) -> Answer:
        """The answer's ``data`` once Shopify ran the document (userErrors are the
        caller's); retries as the module says."""
        attempt = 0
        while True:
            attempt += 1
            if not self.bucket.known:
                async with self._first:
                    if not self.bucket.known:
                        outcome = await self._attempt(operation, document, variables, requested)
                        if isinstance(outcome, Answer):
                            return outcome
                        await self._after(outcome, attempt, requested)
                        continue
            await self._pace(requested)
            try:
                outcome = await self._attempt(operation, document, variables, requested)
            finally:
                self.bucket.release(requested)
            if isinstance(outcome, Answer):
                return outcome
            await self._after(outcome, attempt, requested)

    async def _after(self, outcome: tuple[str, float], attempt: int, requested: int) -> None:
        kind, wait = outcome
        if kind == THROTTLED:
            self.throttled_seconds += wait
            self.metrics.throttled.labels(self.name).inc(wait)
            await asyncio.sleep(wait)
            return
        delay = backoff(attempt, 0.5 + self._random.random())
        log.warning(
            "shopify %s: %s; retrying in %.1f s (attempt %d)", self.name, kind, delay, attempt
        )
        await asyncio.sleep(delay)

    async def _attempt(
        self, operation: str, document: str, variables: dict[str, Any], requested: int
    ) -> Answer | tuple[str, float]:
        """An answer, or (what went wrong, seconds to wait) for a retry."""
        assert self._session is not None, "start() first"
        body = orjson.dumps({"query": document, "variables": variables, "operationName": operation})
        calls = self.metrics.calls
        try:
            async with self._session.post(
                self.target.graphql_url, data=body, headers=self._headers()
            ) as response:
                status = response.status
                raw = await response.read()
        except TimeoutError:
            self.fail("timeout")
            calls.labels(self.name, operation, "timeout").inc()
            return ("timeout", 0.0)
        except aiohttp.ClientError as exc:
            self.fail("connection")
            calls.labels(self.name, operation, "connection").inc()
            return (f"connection failed ({type(exc).__name__})", 0.0)
        if status in (401, 403):
            kind = "unauthorized" if status == 401 else "forbidden"
            self.fail(kind)
            calls.labels(self.name, operation, str(status)).inc()
            raise TargetRefused(kind, f"HTTP {status} from {self.target.shop_domain}")
        if status >= 500 or status == 429:
            self.fail("http_5xx" if status >= 500 else "http_429")
            calls.labels(self.name, operation, str(status)).inc()
            return (f"HTTP {status}", 0.0)
        if status != 200:
            self.fail(f"http_{status}")
            calls.labels(self.name, operation, str(status)).inc()
            raise TargetRefused(f"http_{status}", f"HTTP {status} from {self.target.graphql_url}")
        try:
            answer = orjson.loads(raw)
            assert isinstance(answer, dict)
        except (orjson.JSONDecodeError, AssertionError):
            self.fail("bad_answer")
            calls.labels(self.name, operation, "bad_answer").inc()
            return ("an answer that is not JSON", 0.0)
        cost = (answer.get("extensions") or {}).get("cost") or {}
        status_now = cost.get("throttleStatus")
        if isinstance(status_now, dict):
            self.bucket.learn(
                float(status_now["maximumAvailable"]),
                float(status_now["currentlyAvailable"]),
                float(status_now["restoreRate"]),
                self.clock(),
            )
        codes = [
            str((e.get("extensions") or {}).get("code", "")) for e in answer.get("errors") or ()
        ]
        if THROTTLED in codes:
            calls.labels(self.name, operation, "throttled").inc()
            rate = float((status_now or {}).get("restoreRate") or 50.0)
            available = float((status_now or {}).get("currentlyAvailable") or 0.0)
            return (THROTTLED, self.bucket.restore_time(requested, available, rate) + 0.01)
        actual = cost.get("actualQueryCost")
        if isinstance(actual, int | float):
            self.metrics.points.labels(self.name).inc(actual)
        if INTERNAL in codes:
            self.fail("internal_error")
            calls.labels(self.name, operation, "internal_error").inc()
            raise InternalError(operation)
        if codes or not isinstance(answer.get("data"), dict):
            self.fail("graphql_error")
            calls.labels(self.name, operation, "graphql_error").inc()
            messages = [str(e.get("message", ""))[:200] for e in answer.get("errors") or ()]
            raise GraphQLFailure(f"{operation}: {codes} {messages}")
        calls.labels(self.name, operation, "ok").inc()
        self.last_success = time.time()
        return Answer(answer["data"], cost)
