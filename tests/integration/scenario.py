"""A realistic, seeded mixed stream of valid events for the integration tests.

Every event type; stale ERP balances that arrive after newer ones; duplicates; an
order shuffled across topics; some events without a key or with a wrong one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from infra.config import Settings

# Recent, as production events are: the worker refuses transfers, damaged returns and
# reservation events older than its state horizon (AVAILABILITY_STATE_HORIZON, 7 days)
# and anything dated ahead of its clock. Six hours back, on the hour.
START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Delivery:
    topic: str  # one of: erp, pos, transfers, reservations
    event: dict[str, Any]
    key: str | None  # the Kafka key to send it with ("" for the event's own sku)


def topic_of(settings: Settings, delivery: Delivery) -> str:
    return {
        "erp": settings.erp_topic,
        "pos": settings.pos_topic,
        "transfers": settings.transfers_topic,
        "reservations": settings.reservations_topic,
    }[delivery.topic]


def mixed_stream(
    seed: int, skus: int = 40, locations: int = 5, events_per_sku: int = 25
) -> tuple[list[dict[str, Any]], list[Delivery]]:
    """(the distinct valid events, the deliveries: shuffled, with duplicates)."""
    rnd = random.Random(seed)
    locs = [f"STORE-{i:03d}" for i in range(1, locations)] + ["DC-01"]
    counter = iter(range(1, 10**9))
    events: list[tuple[str, dict[str, Any]]] = []

    def add(topic: str, sku: str, kind: str, **fields: Any) -> None:
        events.append(
            (topic, {"event_id": f"ev-{next(counter):06d}", "type": kind, "sku": sku, **fields})
        )

    def when() -> str:
        return stamp(
            START + timedelta(seconds=rnd.randrange(0, 4 * 3600), milliseconds=rnd.randrange(1000))
        )

    for s in range(skus):
        sku = f"SKU-{s:05d}"
        for loc in rnd.sample(locs, k=rnd.randint(2, len(locs))):
            # A current balance, and a stale one that is published later.
            for hours in (2, 1):
                add(
                    "erp",
                    sku,
                    "erp.balance",
                    location_id=loc,
                    on_hand=rnd.randint(0, 200),
                    as_of=stamp(START + timedelta(hours=hours)),
                )
        for _ in range(events_per_sku):
            loc = rnd.choice(locs)
            roll = rnd.random()
            if roll < 0.35:
                add(
                    "pos",
                    sku,
                    "pos.sale",
                    location_id=loc,
                    quantity=rnd.randint(1, 4),
                    occurred_at=when(),
                )
            elif roll < 0.45:
                add(
                    "pos",
                    sku,
                    "pos.return",
                    location_id=loc,
                    quantity=rnd.randint(1, 2),
                    occurred_at=when(),
                    disposition=rnd.choice(["sellable", "damaged"]),
                )
            elif roll < 0.6:
                transfer = f"TR-{next(counter)}"
                dest = rnd.choice([x for x in locs if x != loc])
                qty = rnd.randint(1, 10)
                leg = {"transfer_id": transfer, "from_location": loc, "to_location": dest}
                add("transfers", sku, "transfer.shipped", quantity=qty, occurred_at=when(), **leg)
                if rnd.random() < 0.6:
                    add(
                        "transfers",
                        sku,
                        "transfer.received",
                        quantity=rnd.randint(1, qty),
                        occurred_at=when(),
                        **leg,
                    )
            else:
                rid = f"ORD-{next(counter)}"
                qty = rnd.randint(1, 3)
                expires = rnd.choice([None, stamp(START + timedelta(days=3650)), stamp(START)])
                add(
                    "reservations",
                    sku,
                    "reservation.created",
                    reservation_id=rid,
                    location_id=loc,
                    quantity=qty,
                    occurred_at=when(),
                    expires_at=expires,
                    channel=rnd.choice([None, "online", "marketplace"]),
                )
                ending = rnd.random()
                if ending < 0.3:
                    add(
                        "reservations",
                        sku,
                        "reservation.released",
                        reservation_id=rid,
                        location_id=loc,
                        occurred_at=when(),
                    )
                elif ending < 0.6:
                    add(
                        "reservations",
                        sku,
                        "reservation.fulfilled",
                        reservation_id=rid,
                        location_id=loc,
                        quantity=rnd.randint(1, qty),
                        occurred_at=when(),
                    )

    deliveries = []
    for topic, event in events:
        roll = rnd.random()
        key = None if roll < 0.05 else ("WRONG-KEY" if roll < 0.08 else "")
        deliveries.append(Delivery(topic, event, key))
    duplicates = rnd.sample(deliveries, k=len(deliveries) // 10)
    deliveries.extend(duplicates)
    rnd.shuffle(deliveries)
    return [event for _, event in events], deliveries


def at_minute(minute: int) -> str:
    return f"2026-11-22T10:{minute:02d}:00Z"


def seed_events() -> list[dict[str, Any]]:
    """A small catalogue for the API tests (no sku: the caller folds it into one):
    S1 (sale, damaged return, a reservation), W1 (ships to S2), S2."""
    return [
        {"type": "erp.balance", "event_id": "e1", "location_id": "S1", "on_hand": 20,
         "as_of": at_minute(0)},
        {"type": "pos.sale", "event_id": "e2", "location_id": "S1", "quantity": 3,
         "occurred_at": at_minute(5)},
        {"type": "pos.return", "event_id": "e3", "location_id": "S1", "quantity": 1,
         "occurred_at": at_minute(6), "disposition": "damaged"},
        {"type": "reservation.created", "event_id": "e4", "reservation_id": "r1",
         "location_id": "S1", "quantity": 2, "occurred_at": at_minute(7)},
        {"type": "erp.balance", "event_id": "e5", "location_id": "W1", "on_hand": 100,
         "as_of": at_minute(0)},
        {"type": "transfer.shipped", "event_id": "e6", "transfer_id": "t1",
         "from_location": "W1", "to_location": "S2", "quantity": 10, "occurred_at": at_minute(8)},
        {"type": "erp.balance", "event_id": "e7", "location_id": "S2", "on_hand": 4,
         "as_of": at_minute(0)},
    ]  # fmt: skip
