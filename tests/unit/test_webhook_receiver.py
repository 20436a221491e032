"""The webhook receiver's pieces without a broker or Redis: the signature check, the
shops taken from the settings, and ``WebhookReceiver.process`` with stand-ins for the
store and the publisher (what is published, in which order it is marked, and what
happens when either fails)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from typing import Any, cast

import orjson
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from redis.exceptions import ConnectionError as RedisConnectionError

from infra.config import Settings
from infra.shopify_config import ShopifyTarget
from infra.store import AvailabilityStore
from services.cli.dead_letters import parse_dead_letter
from services.webhooks.orders import ShopMapping
from services.webhooks.publisher import Publisher, PublishFailed, Record
from services.webhooks.receiver import InProgress, WebhookMetrics, WebhookReceiver
from services.webhooks.shops import WebhookConfigError, WebhookShop, WebhookShops
from services.webhooks.signature import sign, verify

SECRET = SecretStr("whsec_test_0123456789")
SETTINGS = Settings(topic_prefix="acme.")


def test_the_signature_is_shopifys_hmac_of_the_raw_body() -> None:
    body = b'{"id": 1}'
    header = sign(body, SECRET)
    assert base64.b64decode(header) and len(base64.b64decode(header)) == 32
    assert verify(body, header, SECRET)
    assert not verify(body + b" ", header, SECRET)  # one byte more
    assert not verify(body, header, SecretStr("another secret"))
    assert not verify(body, None, SECRET) and not verify(body, "", SECRET)
    assert not verify(body, "é" + header[1:], SECRET)  # not ASCII: refused, no error
    assert not verify(body, header.lower(), SECRET)


def target(name: str, domain: str, secret_env: str | None, **more: Any) -> ShopifyTarget:
    spec: dict[str, Any] = {"name": name, "shop_domain": domain, "access_token": {"env": "T"}}
    if secret_env:
        spec["client_secret"] = {"env": secret_env}
    return ShopifyTarget.model_validate({**spec, **more})


def test_shops_come_from_the_targets_with_a_readable_client_secret(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MAIN_SECRET", "s3cr3t-main")
    settings = Settings(
        shopify_targets=[
            target(
                "main",
                "Acme.myshopify.com",
                "MAIN_SECRET",
                locations={
                    "STORE-001": "gid://shopify/Location/1",
                    "STORE-002": "gid://shopify/Location/1",
                },
            ),
            target("outlet", "outlet.myshopify.com", "OUTLET_SECRET"),
            target("push-only", "push.myshopify.com", None),
        ],
        shopify_webhook_default_locations={"main": "WH-1"},
    )
    shops = WebhookShops.from_settings(settings)
    assert len(shops) == 1
    main = shops.by_domain("acme.MYSHOPIFY.com ")
    assert main is not None and main.secret.get_secret_value() == "s3cr3t-main"
    assert main.mapping == ShopMapping(
        "main", "online", {"gid://shopify/Location/1": "STORE-001"}, "WH-1"
    )
    assert shops.by_domain("outlet.myshopify.com") is None  # its secret is missing
    assert shops.by_domain("push.myshopify.com") is None
    assert "OUTLET_SECRET" in caplog.text and "s3cr3t" not in caplog.text
    assert "s3cr3t" not in repr(main)


@pytest.mark.parametrize(
    ("defaults", "message"),
    [
        ({"nope": "WH-1"}, "names target 'nope'"),
        ({"main": "not a location"}, "must be a location id"),
    ],
)
def test_default_locations_must_name_a_target_and_a_location(
    defaults: dict[str, str], message: str
) -> None:
    settings = Settings(
        shopify_targets=[target("main", "a.myshopify.com", None)],
        shopify_webhook_default_locations=defaults,
    )
    with pytest.raises(WebhookConfigError, match=message):
        WebhookShops.from_settings(settings)


class FakeStore:
    """``claim_webhook`` and friends, as the Redis script behaves."""

    def __init__(self) -> None:
        self.marks: dict[tuple[str, str], str] = {}
        self.ttls: dict[tuple[str, str], int] = {}
        self.down = False
        self.calls: list[str] = []

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.down:
            raise RedisConnectionError("down")

    async def claim_webhook(self, target: str, webhook_id: str, seconds: int) -> str | None:
        self._call("claim")
        state = self.marks.get((target, webhook_id))
        if state is None:
            self.marks[(target, webhook_id)] = "pending"
        return state

    async def webhook_done(self, target: str, webhook_id: str, ttl: int) -> None:
        self._call("done")
        self.marks[(target, webhook_id)] = "done"
        self.ttls[(target, webhook_id)] = ttl

    async def release_webhook(self, target: str, webhook_id: str) -> None:
        self._call("release")
        self.marks.pop((target, webhook_id), None)


class FakePublisher:
    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.published: list[Record] = []
        self.fail = False

    async def publish(self, records: Sequence[Record], timeout: float) -> None:
        self.store.calls.append("publish")
        if self.fail:
            raise PublishFailed("the broker did not acknowledge within 3 s")
        self.published.extend(records)

    async def close(self) -> None:
        pass


SHOP = WebhookShop(
    "acme.myshopify.com",
    ShopMapping("main", "online", {"gid://shopify/Location/7": "STORE-001"}, None),
    SECRET,
)


def order(location_id: int | None = 7, sku: str | None = "SKU-1") -> bytes:
    return orjson.dumps(
        {
            "id": 5001,
            "created_at": "2026-12-04T10:00:00-05:00",
            "location_id": location_id,
            "line_items": [{"id": 6001, "sku": sku, "quantity": 2}],
        }
    )


def receiver() -> tuple[WebhookReceiver, FakeStore, FakePublisher]:
    store = FakeStore()
    publisher = FakePublisher(store)
    made = WebhookReceiver(
        SETTINGS,
        WebhookShops([SHOP]),
        cast(AvailabilityStore, store),
        cast(Publisher, publisher),
        WebhookMetrics(CollectorRegistry()),
    )
    return made, store, publisher


def test_events_are_published_then_the_webhook_is_marked_and_a_repeat_dropped() -> None:
    made, store, publisher = receiver()
    first = asyncio.run(made.process(SHOP, "orders/create", "w-1", order()))
    assert first.to_data() == {"outcome": "published", "events": 1, "dead_letters": 0}
    assert store.calls == ["claim", "publish", "done"]  # done only once acknowledged
    [record] = publisher.published
    assert (record.topic, record.key) == ("acme.orders.reservations", b"SKU-1")
    assert orjson.loads(record.value)["reservation_id"] == "shopify:main:5001:6001"
    assert store.marks == {("main", "w-1"): "done"}
    assert store.ttls == {("main", "w-1"): SETTINGS.shopify_webhook_dedupe_ttl}

    again = asyncio.run(made.process(SHOP, "orders/create", "w-1", order()))
    assert again.outcome == "duplicate" and len(publisher.published) == 1


def test_a_broker_failure_leaves_the_webhook_unmarked_for_shopifys_retry() -> None:
    made, store, publisher = receiver()
    publisher.fail = True
    with pytest.raises(PublishFailed):
        asyncio.run(made.process(SHOP, "orders/create", "w-2", order()))
    assert store.marks == {} and store.calls == ["claim", "publish", "release"]
    publisher.fail = False
    assert asyncio.run(made.process(SHOP, "orders/create", "w-2", order())).outcome == "published"


def test_a_delivery_arriving_while_another_is_processed_is_told_to_retry() -> None:
    made, store, publisher = receiver()
    store.marks[("main", "w-7")] = "pending"
    with pytest.raises(InProgress, match="w-7"):
        asyncio.run(made.process(SHOP, "orders/create", "w-7", order()))
    assert publisher.published == [] and store.marks[("main", "w-7")] == "pending"


def test_without_redis_the_webhook_is_processed_anyway() -> None:
    made, store, publisher = receiver()
    store.down = True
    outcome = asyncio.run(made.process(SHOP, "orders/create", "w-3", order()))
    assert outcome.outcome == "published" and len(publisher.published) == 1


def test_an_unmappable_line_is_dead_lettered_where_replay_can_take_it() -> None:
    made, store, publisher = receiver()
    outcome = asyncio.run(made.process(SHOP, "orders/create", "w-4", order(location_id=99)))
    assert outcome.to_data() == {"outcome": "dead_lettered", "events": 0, "dead_letters": 1}
    [record] = publisher.published
    assert (record.topic, record.key) == ("acme.availability.dlq", b"SKU-1")
    letter = parse_dead_letter(0, 0, record.key, record.value)
    assert letter.topic == "acme.orders.reservations"  # replay publishes it there
    assert "gid://shopify/Location/99" in letter.reason and "'main'" in letter.reason
    assert letter.original is not None
    assert orjson.loads(letter.original)["location_id"] is None
    context = orjson.loads(record.value)["context"]
    assert context == {
        "shop": "acme.myshopify.com",
        "target": "main",
        "topic": "orders/create",
        "webhook_id": "w-4",
        "order_id": 5001,
        "line_item_id": 6001,
    }
    assert store.marks[("main", "w-4")] == "done"


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"id": 1}', b"\xff\xfe"])
def test_a_payload_that_cannot_be_read_is_dead_lettered_whole(body: bytes) -> None:
    made, _, publisher = receiver()
    outcome = asyncio.run(made.process(SHOP, "orders/cancelled", "w-5", body))
    assert outcome.to_data() == {"outcome": "dead_lettered", "events": 0, "dead_letters": 1}
    [record] = publisher.published
    letter = parse_dead_letter(0, 0, record.key, record.value)
    assert (letter.topic, letter.original, letter.key) == ("shopify:orders/cancelled", body, None)
    assert letter.reason.startswith("the orders/cancelled webhook cannot be read")


def test_other_topics_are_ignored() -> None:
    made, store, publisher = receiver()
    outcome = asyncio.run(made.process(SHOP, "products/update", "w-6", b"{}"))
    assert outcome.outcome == "ignored"
    assert publisher.published == [] and store.calls == []
