"""One verified Shopify webhook, from its bytes to acknowledged events.

``WebhookReceiver.process`` is called once the route has found the shop and checked
the signature. In order:

1. A topic that is not an order topic is answered 200 and ignored.
2. A webhook id already marked in Redis is a repeat: answered 200, nothing published.
3. The payload is mapped (``services.webhooks.orders``) to events, plus a dead letter
   per line that cannot be mapped; a payload that cannot be read at all becomes one
   dead letter of the raw body. Either way Shopify gets 200: retrying would not help.
4. Everything is published and acknowledged by the broker within
   ``AVAILABILITY_SHOPIFY_WEBHOOK_PUBLISH_TIMEOUT``; else ``PublishFailed`` (503, and
   Shopify retries).
5. Only then is the webhook id marked (``SET NX`` with the dedupe TTL): a failure
   before this point leaves it unmarked, so Shopify's retry is processed again, and
   the same events are published again, which the fold applies once.

Redis is only an optimisation here: when it cannot be reached in time, the webhook is
processed as if it were new (its events are idempotent) and not marked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
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
MALFORMED: Final = "malformed"


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
        """Raises ``PublishFailed`` when the broker did not acknowledge in time."""
        if topic not in TOPICS:
            log.info("shopify webhook %s (%s) from %s ignored", webhook_id, topic, shop.name)
            return self._answered(topic, Outcome(IGNORED))
        if await self._delivered(shop, webhook_id):
            log.info("shopify webhook %s (%s) from %s is a repeat", webhook_id, topic, shop.name)
            return self._answered(topic, Outcome(DUPLICATE))
        context = {
            "shop": shop.domain,
            "target": shop.name,
            "topic": topic,
            "webhook_id": webhook_id,
        }
        try:
            mapped = map_webhook(topic, orjson.loads(body), shop.mapping)
        except (orjson.JSONDecodeError, MalformedWebhook) as exc:
            reason = f"the {topic} webhook cannot be read: {exc}"
            records = [self._unreadable(topic, body, reason, context)]
            await self.publisher.publish(records, self.settings.shopify_webhook_publish_timeout)
            self.metrics.dead_letters.labels(MALFORMED).inc()
            log.warning(
                "shopify webhook %s from %s dead-lettered: %s", webhook_id, shop.name, reason
            )
            await self._mark(shop, webhook_id)
            return self._answered(topic, Outcome(DEAD_LETTERED, 0, 1))
        records = self._records(mapped, context)
        await self.publisher.publish(records, self.settings.shopify_webhook_publish_timeout)
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
        await self._mark(shop, webhook_id)
        log.info(
            "shopify webhook %s (%s) from %s: order %d, %d events, %d dead letters",
            webhook_id,
            topic,
            shop.name,
            mapped.order_id,
            len(mapped.events),
            len(mapped.unmapped),
        )
        return self._answered(
            topic, Outcome(_outcome(mapped), len(mapped.events), len(mapped.unmapped))
        )

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
            value = dead_letter_record(
                value=orjson.dumps(line.event),
                topic=topic,
                partition=-1,  # never on the topic: replay publishes it there
                offset=-1,
                reason=line.reason,
                event_id=line.event["event_id"],
                sku=sku if isinstance(sku, str) else None,
                context={**context, "order_id": mapped.order_id, "line_item_id": line.line_item_id},
            )
            records.append(Record(self.settings.dlq_topic, key, value))
        return records

    def _unreadable(
        self, topic: str, body: bytes, reason: str, context: Mapping[str, Any]
    ) -> Record:
        if len(body) > MAX_DEAD_BODY:
            reason += f" (the body's first {MAX_DEAD_BODY} of {len(body)} bytes kept)"
            body = body[:MAX_DEAD_BODY]
        value = dead_letter_record(
            value=body,
            topic=f"{WEBHOOK_SOURCE_PREFIX}{topic}",
            partition=-1,
            offset=-1,
            reason=reason,
            context=context,
        )
        return Record(self.settings.dlq_topic, None, value)

    async def _delivered(self, shop: WebhookShop, webhook_id: str) -> bool:
        try:
            async with asyncio.timeout(REDIS_WAIT):
                return await self.store.webhook_delivered(shop.name, webhook_id)
        except (TimeoutError, RedisError, OSError) as exc:
            log.warning(
                "shopify webhooks: Redis not answering (%r); %s taken as new", exc, webhook_id
            )
            return False

    async def _mark(self, shop: WebhookShop, webhook_id: str) -> None:
        ttl = self.settings.shopify_webhook_dedupe_ttl
        try:
            async with asyncio.timeout(REDIS_WAIT):
                await self.store.mark_webhook_delivered(shop.name, webhook_id, ttl)
        except (TimeoutError, RedisError, OSError) as exc:
            # The events are acknowledged: a repeat will publish them again, harmlessly.
            log.warning("shopify webhooks: could not mark %s delivered: %r", webhook_id, exc)


def _outcome(mapped: Mapped) -> str:
    if mapped.events:
        return PUBLISHED
    return DEAD_LETTERED if mapped.unmapped else NO_CHANGE
