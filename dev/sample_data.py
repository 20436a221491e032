"""Publish a small, realistic sample catalogue to the input topics.

    python -m dev.sample_data [--skus N] [--locations M] [--seed S]
    python -m dev.sample_data --event '{"event_id": ..., "type": "pos.sale", ...}'

Events follow CONTRACT.md section 2; message keys are the sku (UTF-8). Configuration
(broker, topic prefix, ...) comes from the same ``AVAILABILITY_*`` variables as the service.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from infra.config import Settings, get_settings
from infra.kafka import kafka_client_options

Event = dict[str, Any]


def rfc3339(moment: datetime) -> str:
    """``2026-11-22T10:15:30.123Z`` (UTC, milliseconds)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def topic_for(settings: Settings, event_type: str) -> str:
    """The input topic that carries events of ``event_type``."""
    family = event_type.split(".", 1)[0]
    topics = {
        "erp": settings.erp_topic,
        "pos": settings.pos_topic,
        "transfer": settings.transfers_topic,
        "reservation": settings.reservations_topic,
    }
    if family not in topics:
        raise ValueError(f"unknown event type {event_type!r}")
    return topics[family]


def location_names(count: int) -> list[str]:
    """``count`` locations: stores ``STORE-001..`` and one distribution centre ``DC-01``."""
    if count < 1:
        raise ValueError("at least one location")
    return [f"STORE-{i:03d}" for i in range(1, count)] + ["DC-01"]


@dataclass
class Catalogue:
    skus: list[str]
    locations: list[str]
    seed: int
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    events: list[Event] = field(default_factory=list)

    def add(self, event_type: str, sku: str, **fields: Any) -> Event:
        event: Event = {
            "event_id": f"sample-{self.run_id}-{len(self.events) + 1:05d}",
            "type": event_type,
            "sku": sku,
            **fields,
        }
        self.events.append(event)
        return event

    def at(self, minutes: float) -> str:
        return rfc3339(self.now + timedelta(minutes=minutes))

    def build(self) -> list[Event]:
        rng = random.Random(self.seed)
        stores = [loc for loc in self.locations if not loc.startswith("DC-")] or self.locations
        dc = self.locations[-1]

        # ERP balances an hour ago: the baseline for every SKU x location.
        for sku in self.skus:
            for loc in self.locations:
                on_hand = rng.randint(50, 400) if loc.startswith("DC-") else rng.randint(0, 40)
                self.add("erp.balance", sku, location_id=loc, on_hand=on_hand, as_of=self.at(-60))

        # Trading since then: sales and returns at the stores.
        minute = -55.0
        for _ in range(len(self.skus) * 2):
            minute += rng.uniform(0.1, 1.5)
            sku, store = rng.choice(self.skus), rng.choice(stores)
            self.add(
                "pos.sale",
                sku,
                location_id=store,
                quantity=rng.randint(1, 3),
                occurred_at=self.at(minute),
            )
        for disposition in ("sellable", "sellable", "damaged"):
            minute += rng.uniform(0.1, 1.5)
            self.add(
                "pos.return",
                rng.choice(self.skus),
                location_id=rng.choice(stores),
                quantity=1,
                occurred_at=self.at(minute),
                disposition=disposition,
            )

        # A replenishment transfer from the DC: one shipped and received, one on the road.
        first = self.skus[0]
        second = self.skus[1 % len(self.skus)]
        if len(self.locations) > 1:
            leg = {"from_location": dc, "to_location": stores[0]}
            self.add(
                "transfer.shipped",
                first,
                transfer_id="TR-1001",
                quantity=12,
                occurred_at=self.at(-20),
                **leg,
            )
            self.add(
                "transfer.received",
                first,
                transfer_id="TR-1001",
                quantity=12,
                occurred_at=self.at(-5),
                **leg,
            )
            leg = {"from_location": dc, "to_location": stores[-1]}
            self.add(
                "transfer.shipped",
                second,
                transfer_id="TR-1002",
                quantity=6,
                occurred_at=self.at(-10),
                **leg,
            )

        # Online reservations: one active, one released, one fulfilled, one expiring soon.
        store = stores[0]
        third = self.skus[2 % len(self.skus)]
        fourth = self.skus[3 % len(self.skus)]
        rid = f"ORD-{self.run_id}"
        self.add(
            "reservation.created",
            first,
            reservation_id=f"{rid}-1",
            location_id=store,
            quantity=2,
            occurred_at=self.at(-8),
            channel="online",
        )
        self.add(
            "reservation.created",
            second,
            reservation_id=f"{rid}-2",
            location_id=store,
            quantity=1,
            occurred_at=self.at(-7),
            channel="online",
        )
        self.add(
            "reservation.released",
            second,
            reservation_id=f"{rid}-2",
            location_id=store,
            occurred_at=self.at(-3),
        )
        self.add(
            "reservation.created",
            third,
            reservation_id=f"{rid}-3",
            location_id=dc,
            quantity=3,
            occurred_at=self.at(-6),
            channel="online",
        )
        self.add(
            "reservation.fulfilled",
            third,
            reservation_id=f"{rid}-3",
            location_id=dc,
            quantity=3,
            occurred_at=self.at(-2),
        )
        self.add(
            "reservation.created",
            fourth,
            reservation_id=f"{rid}-4",
            location_id=store,
            quantity=1,
            occurred_at=self.at(-1),
            expires_at=self.at(5),
            channel="online",
        )
        return self.events


async def publish(settings: Settings, events: Sequence[Event]) -> Counter[tuple[str, str]]:
    """Send ``events`` keyed by sku and wait until every one is acknowledged."""
    producer = AIOKafkaProducer(
        **kafka_client_options(settings),
        acks="all",
        client_id="dev-sample-data",
        max_batch_size=settings.producer_max_batch_size,
        linger_ms=5,
    )
    await producer.start()
    counts: Counter[tuple[str, str]] = Counter()
    try:
        pending = []
        for event in events:
            topic = topic_for(settings, str(event["type"]))
            key = str(event["sku"]).encode()
            pending.append(await producer.send(topic, orjson.dumps(event), key=key))
            counts[(topic, str(event["type"]))] += 1
        await asyncio.gather(*pending)  # every record acknowledged
        await producer.flush()
    finally:
        await producer.stop()
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.sample_data", description=__doc__)
    parser.add_argument("--skus", type=int, default=20, help="number of SKUs (default 20)")
    parser.add_argument("--locations", type=int, default=4, help="locations incl. DC-01 (4)")
    parser.add_argument("--seed", type=int, default=7, help="random seed for quantities (7)")
    parser.add_argument("--event", help="publish this one JSON event instead (topic by type)")
    args = parser.parse_args(argv)
    settings = get_settings()

    if args.event is not None:
        try:
            event = orjson.loads(args.event)
            if not isinstance(event, dict) or "type" not in event or "sku" not in event:
                raise ValueError("an event is a JSON object with at least 'type' and 'sku'")
            topic_for(settings, str(event["type"]))
        except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
            print(f"bad event: {exc}", file=sys.stderr)
            return 2
        events = [event]
    else:
        if args.skus < 1 or args.locations < 1:
            parser.error("--skus and --locations must be at least 1")
        skus = [f"SKU-{i:04d}" for i in range(1, args.skus + 1)]
        events = Catalogue(skus, location_names(args.locations), args.seed).build()

    counts = asyncio.run(publish(settings, events))
    print(f"published {sum(counts.values())} events to {settings.bootstrap_servers}:")
    for (topic, event_type), n in sorted(counts.items()):
        print(f"  {n:5d}  {event_type:<22} -> {topic}")
    sku = str(events[0]["sku"])
    print(
        "read one back: curl -s "
        f"'http://127.0.0.1:{settings.http_port}/v1/availability/{sku}?channel=online'"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
