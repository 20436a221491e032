"""Signed webhook deliveries to the service, the way Shopify sends them.

Every delivery is one JSON body signed once: ``X-Shopify-Hmac-Sha256`` is the base64
HMAC-SHA256 of those exact bytes with the app's client secret. A delivery keeps its
``X-Shopify-Webhook-Id`` on every retry and on a duplicate (Shopify "may deliver twice":
the id is the dedupe key); ``X-Shopify-Event-Id`` names the event. A non-2xx answer,
a timeout (Shopify waits 5 s) or a refused connection is retried after each of
``retry_delays`` (Shopify: 8 retries over 4 hours; the default here is compressed into
about a minute). ``delay`` holds a delivery back, so events can arrive out of order.
The secret is never logged or shown by the control API.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp
import orjson

from dev.shopify_admin.schema_cache import API_VERSION

log = logging.getLogger("dev.shopify_admin.webhooks")

DEFAULT_RETRY_DELAYS: Final = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
DEFAULT_TIMEOUT: Final = 5.0
TOPICS: Final = frozenset(
    {
        "orders/create",
        "orders/cancelled",
        "orders/fulfilled",
        "fulfillments/create",
        "refunds/create",
    }
)


def sign(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


@dataclass
class WebhookTarget:
    url: str | None = None
    secret: str | None = field(default=None, repr=False)
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    timeout: float = DEFAULT_TIMEOUT

    def public(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "secret_set": self.secret is not None,
            "retry_delays": list(self.retry_delays),
            "timeout": self.timeout,
        }


@dataclass
class Delivery:
    webhook_id: str
    event_id: str
    topic: str
    shop: str
    body: bytes
    triggered_at: str
    copy: int = 1  # 2 for the duplicate of a delivery sent twice
    attempts: list[dict[str, Any]] = field(default_factory=list)
    state: str = "pending"  # pending, delivered, failed

    def public(self) -> dict[str, Any]:
        return {
            "webhook_id": self.webhook_id,
            "event_id": self.event_id,
            "topic": self.topic,
            "shop": self.shop,
            "copy": self.copy,
            "triggered_at": self.triggered_at,
            "state": self.state,
            "attempts": list(self.attempts),
            "payload": orjson.loads(self.body),
        }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class WebhookSender:
    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def send(
        self,
        target: WebhookTarget,
        shop: str,
        topic: str,
        payload: dict[str, Any],
        *,
        deliver_twice: bool = False,
        delay: float = 0.0,
    ) -> list[Delivery]:
        """Queue an event's delivery (and its duplicate); returns them at once."""
        if target.url is None or target.secret is None:
            raise ValueError("no webhook url or client secret configured for this shop")
        body = orjson.dumps(payload)
        first = Delivery(str(uuid.uuid4()), str(uuid.uuid4()), topic, shop, body, _now())
        copies = [first]
        if deliver_twice:
            copies.append(
                Delivery(first.webhook_id, first.event_id, topic, shop, body, first.triggered_at, 2)
            )
        for number, delivery in enumerate(copies):
            self.deliveries.append(delivery)
            task = asyncio.create_task(self._deliver(target, delivery, delay + 0.05 * number))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return copies

    def _headers(self, target: WebhookTarget, delivery: Delivery) -> dict[str, str]:
        assert target.secret is not None
        return {
            "Content-Type": "application/json",
            "User-Agent": "Shopify-Captain-Hook",
            "X-Shopify-Topic": delivery.topic,
            "X-Shopify-Hmac-Sha256": sign(delivery.body, target.secret),
            "X-Shopify-Shop-Domain": delivery.shop,
            "X-Shopify-Webhook-Id": delivery.webhook_id,
            "X-Shopify-Event-Id": delivery.event_id,
            "X-Shopify-API-Version": API_VERSION,
            "X-Shopify-Triggered-At": delivery.triggered_at,
        }

    async def _deliver(self, target: WebhookTarget, delivery: Delivery, delay: float) -> None:
        assert self._session is not None and target.url is not None
        if delay > 0:
            await asyncio.sleep(delay)
        waits = (0.0, *target.retry_delays)
        for number, wait in enumerate(waits, start=1):
            if wait:
                await asyncio.sleep(wait)
            started = time.monotonic()
            attempt: dict[str, Any] = {"attempt": number, "at": _now()}
            try:
                async with self._session.post(
                    target.url,
                    data=delivery.body,
                    headers=self._headers(target, delivery),
                    timeout=aiohttp.ClientTimeout(total=target.timeout, connect=1.0),
                ) as response:
                    await response.read()
                    attempt["status"] = response.status
            except (TimeoutError, aiohttp.ClientError) as exc:
                attempt["error"] = type(exc).__name__
            attempt["seconds"] = round(time.monotonic() - started, 3)
            delivery.attempts.append(attempt)
            if 200 <= attempt.get("status", 0) < 300:
                delivery.state = "delivered"
                return
            log.info("webhook %s %s attempt %d failed", delivery.topic, delivery.webhook_id, number)
        delivery.state = "failed"
