"""One verified Shopify webhook, from its bytes to acknowledged events.

``WebhookReceiver.process`` is called once the route has found the shop and checked
the signature. In order:

1. A topic that is not an order topic is answered 200 and ignored.
2. The webhook id is claimed in Redis (one script: set if absent, ``pending`` for
   ``PENDING_SECONDS``). Already ``done``: a repeat, answered 200, nothing published.
   ``pending``: another delivery of it is being processed right now (Shopify "may
   deliver twice"): ``InProgress``, answered 503 so that Shopify retries later and
   then finds it done.
3. The payload is mapped (``services.webhooks.orders``) to events, plus a dead letter
   per line that cannot be mapped; a payload that cannot be read at all becomes one
   dead letter of the raw body. Either way Shopify gets 200: retrying would not help.
4. Everything is published and acknowledged by the broker within
   ``AVAILABILITY_SHOPIFY_WEBHOOK_PUBLISH_TIMEOUT``; else ``PublishFailed`` (503, so
   Shopify retries), and the claim is given back.
5. Only then is the webhook id marked ``done``, for
   ``AVAILABILITY_SHOPIFY_WEBHOOK_DEDUPE_TTL``. A failure before this point leaves it
   unmarked (or its claim expiring), so Shopify's retry is processed again and
   publishes the same events again, which the fold applies once: their ids come from
   the order, not from the delivery.

Redis is only an optimisation here: when it cannot be reached in time, the webhook is
processed as if it were new (its events are idempotent) and not marked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from prometheus_client import CollectorRegistry, Counter
from redis.exceptions import RedisError

from infra.config import Settings
from infra.dead_letters import dead_letter_record
from infra.store import AvailabilityStore
from services.webhooks.orders import TOPICS, MalformedWebhook, Mapped, map_webhook
from services.webhooks.publisher import Publisher, Record
from services.webhooks.shops import WebhookShop, WebhookShops

log = logging.getLogger(__name__)

#: Longest wait for Redis, per call: it must not eat Shopify's 5 s.
REDIS_WAIT: Final = 0.5
#: How long a claim holds a webhook id while one delivery is processed: far beyond the
#: publish timeout, and short enough that a process killed meanwhile delays Shopify's
#: retries by seconds, not hours.
PENDING_SECONDS: Final = 30
#: A dead letter keeps at most this much of an unreadable body (base64 makes it a third
#: larger, and a Kafka record is 1 MB at most by default).
MAX_DEAD_BODY: Final = 512 * 1024
#: The dead-letter "topic" of a webhook that could not be read at all.
WEBHOOK_SOURCE_PREFIX: Final = "shopify:"

# Outcomes (the ``outcome`` label, and the answer's body).
PUBLISHED: Final = "published"
DUPLICATE: Final = "duplicate"
IGNORED: Final = "ignored"
DEAD_LETTERED: Final = "dead_lettered"
NO_CHANGE: Final = "no_change"  # e.g. a refund of returned goods
#: The dead-letter reason label of a payload that could not be read.
MALFORMED: Final = "malformed"

# What Redis says of a webhook id (``AvailabilityStore.claim_webhook``).
DONE: Final = "done"
PENDING: Final = "pending"
UNCLAIMED: Final = "unclaimed"  # Redis could not be asked


class InProgress(Exception):
    """Another delivery of the same webhook is being processed now."""


@dataclass(frozen=True, slots=True)
class Outcome:
    outcome: str
    events: int = 0
    dead_letters: int = 0

    def to_data(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "events": self.events, "dead_letters": self.dead_letters}


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.webhooks = Counter(
            "availability_shopify_webhooks",
            "Shopify webhooks answered, by topic and outcome",
            ["topic", "outcome"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "availability_shopify_webhook_dead_letters",
            "Dead letters of Shopify webhooks: lines that could not be mapped, or payloads"
            " that could not be read, by reason",
            ["reason"],
            registry=registry,
        )

    def answered(self, topic: str | None, outcome: str) -> None:
        self.webhooks.labels(topic if topic in TOPICS else "other", outcome).inc()


class WebhookReceiver:
    def __init__(
        self,
        settings: Settings,
        shops: WebhookShops,
        store: AvailabilityStore,
        publisher: Publisher,
        metrics: WebhookMetrics,
    ) -> None:
        self.settings = settings
        self.shops = shops
        self.store = store
        self.publisher = publisher
        self.metrics = metrics

    def start(self) -> None:
        if len(self.shops):  # no shop can send webhooks: no producer needed
            self.publisher.start()

    async def close(self) -> None:
        await self.publisher.close()

    async def process(self, shop: WebhookShop, topic: str, webhook_id: str, body: bytes) -> Outcome:
        """Raises ``InProgress``, or ``PublishFailed`` when the broker did not
        acknowledge in time (the route answers both with 503)."""
        if topic not in TOPICS:
            log.info("shopify webhook %s (%s) from %s ignored", webhook_id, topic, shop.name)
            return self._answered(topic, Outcome(IGNORED))
        state = await self._claim(shop, webhook_id)
        if state == DONE:
            log.info("shopify webhook %s (%s) from %s is a repeat", webhook_id, topic, shop.name)
            return self._answered(topic, Outcome(DUPLICATE))
        if state == PENDING:
            raise InProgress(f"another delivery of webhook {webhook_id} is being processed")
        try:
            outcome = await self._publish(shop, topic, webhook_id, body)
        except BaseException:
            if state is None:
                await self._redis("giving back", self.store.release_webhook(shop.name, webhook_id))
            raise
        if state is None:
            ttl = self.settings.shopify_webhook_dedupe_ttl
            await self._redis("marking", self.store.webhook_done(shop.name, webhook_id, ttl))
        return self._answered(topic, outcome)

    async def _publish(
        self, shop: WebhookShop, topic: str, webhook_id: str, body: bytes
    ) -> Outcome:
        context = {
            "shop": shop.domain,
            "target": shop.name,
            "topic": topic,
            "webhook_id": webhook_id,
        }
        timeout = self.settings.shopify_webhook_publish_timeout
        try:
            mapped = map_webhook(topic, orjson.loads(body), shop.mapping)
        except (orjson.JSONDecodeError, MalformedWebhook) as exc:
            reason = f"the {topic} webhook cannot be read: {exc}"
            await self.publisher.publish([self._unreadable(topic, body, reason, context)], timeout)
            self.metrics.dead_letters.labels(MALFORMED).inc()
            log.warning(
                "shopify webhook %s from %s dead-lettered: %s", webhook_id, shop.name, reason
            )
            return Outcome(DEAD_LETTERED, 0, 1)
        await self.publisher.publish(self._records(mapped, context), timeout)
        for line in mapped.unmapped:
            self.metrics.dead_letters.labels(line.kind).inc()
            log.warning(
                "shopify webhook %s (%s) from %s: order %d line %d dead-lettered: %s",
                webhook_id,
                topic,
                shop.name,
                mapped.order_id,
                line.line_item_id,
                line.reason,
            )
        log.info(
            "shopify webhook %s (%s) from %s: order %d, %d events, %d dead letters",
            webhook_id,
            topic,
            shop.name,
            mapped.order_id,
            len(mapped.events),
            len(mapped.unmapped),
        )
        return Outcome(_outcome(mapped), len(mapped.events), len(mapped.unmapped))

    def _answered(self, topic: str, outcome: Outcome) -> Outcome:
        self.metrics.answered(topic, outcome.outcome)
        return outcome

    def _records(self, mapped: Mapped, context: Mapping[str, Any]) -> list[Record]:
        topic = self.settings.reservations_topic
        records = [
            Record(topic, event["sku"].encode(), orjson.dumps(event)) for event in mapped.events
        ]
        for line in mapped.unmapped:
            sku = line.event.get("sku")
            key = sku.encode() if isinstance(sku, str) else None
            letter = dead_letter_record(
                key=key,
                value=orjson.dumps(line.event),
                topic=topic,
                partition=-1,  # never on the topic: a replay publishes it there
                offset=-1,
                reason=line.reason,
                event_id=line.event["event_id"],
                sku=sku if isinstance(sku, str) else None,
                context={**context, "order_id": mapped.order_id, "line_item_id": line.line_item_id},
                max_bytes=self.settings.dead_letter_max_bytes,
            )
            records.append(Record(self.settings.dlq_topic, letter.key, letter.value))
        return records

    def _unreadable(
        self, topic: str, body: bytes, reason: str, context: Mapping[str, Any]
    ) -> Record:
        if len(body) > MAX_DEAD_BODY:
            reason += f" (the body's first {MAX_DEAD_BODY} of {len(body)} bytes kept)"
            body = body[:MAX_DEAD_BODY]
        letter = dead_letter_record(
            key=None,
            value=body,
            topic=f"{WEBHOOK_SOURCE_PREFIX}{topic}",
            partition=-1,
            offset=-1,
            reason=reason,
            context=context,
            max_bytes=self.settings.dead_letter_max_bytes,
        )
        return Record(self.settings.dlq_topic, None, letter.value)

    async def _claim(self, shop: WebhookShop, webhook_id: str) -> str | None:
        """None: ours to process; else DONE, PENDING, or UNCLAIMED when Redis is away."""
        try:
            async with asyncio.timeout(REDIS_WAIT):
                return await self.store.claim_webhook(shop.name, webhook_id, PENDING_SECONDS)
        except (TimeoutError, RedisError, OSError) as exc:
            log.warning(
                "shopify webhooks: Redis not answering (%r); %s taken as new", exc, webhook_id
            )
            return UNCLAIMED

    async def _redis(self, what: str, call: Awaitable[None]) -> None:
        try:
            async with asyncio.timeout(REDIS_WAIT):
                await call
        except (TimeoutError, RedisError, OSError) as exc:
            # At worst a repeat is processed again, publishing the same events.
            log.warning("shopify webhooks: %s a webhook id failed: %r", what, exc)


def _outcome(mapped: Mapped) -> str:
    if mapped.events:
        return PUBLISHED
    return DEAD_LETTERED if mapped.unmapped else NO_CHANGE
