"""The benchmark's workload: a catalogue of ERP balances and a realistic event mix.

Pure and deterministic (a seeded generator): the same arguments give the same events,
so that the fold, its floor and every worker count see exactly the same input.

The mix, per 100 events after the catalogue (``MIX``): 50 store sales, 5 returns
(one in five damaged), 20 reservations created (half of them for the online channel,
one in four with an expiry an hour ahead), 10 reservations closed (released or partly
fulfilled, always one created earlier), 7 transfers (shipped, then received for most
of them later in the stream) and 8 fresh ERP balances (a later ``as_of``). SKUs are
drawn by popularity: Zipf by default (a few SKUs take most events, as in retail
demand), or uniformly (nearly every event on a SKU of its own: the worst case for
writing each changed SKU once per batch).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any, Final

Event = dict[str, Any]

#: Every sale and balance of the mix happens after this instant.
ERP_AS_OF: Final[str] = "2026-01-01T00:00:00Z"
CATALOGUE_ON_HAND: Final[int] = 1_000_000
#: Reservations that expire do so after any run: the figures stay deterministic.
RESERVATION_EXPIRES_AT: Final[str] = "2030-01-01T00:00:00Z"

#: (kind, weight in percent); ``close`` is a release or a fulfilment, ``transfer`` a
#: shipment (later received).
MIX: Final[tuple[tuple[str, int], ...]] = (
    ("sale", 50),
    ("return", 5),
    ("reserve", 20),
    ("close", 10),
    ("transfer", 7),
    ("balance", 8),
)


def sku_name(index: int) -> str:
    return f"SKU-{index:06d}"


def location_name(index: int) -> str:
    return f"LOC-{index:03d}"


def catalogue(run_id: str, skus: int, locations: int) -> Iterator[Event]:
    """One ERP balance of ``CATALOGUE_ON_HAND`` units per SKU and location, SKU by SKU."""
    for i in range(skus):
        sku = sku_name(i)
        for j in range(locations):
            yield {
                "type": "erp.balance",
                "event_id": f"{run_id}-erp-{i}-{j}",
                "sku": sku,
                "location_id": location_name(j),
                "on_hand": CATALOGUE_ON_HAND,
                "as_of": ERP_AS_OF,
            }


@dataclass
class _Open:
    sku: str
    location: str
    ident: str
    quantity: int


POPULARITIES: Final[tuple[str, ...]] = ("zipf", "uniform")
#: Exponent of the Zipf popularity: with 10,000 SKUs the most popular 20% take about
#: 84% of the events, the 80/20 rule of retail demand.
ZIPF_EXPONENT: Final[float] = 1.0


def sku_picker(skus: int, popularity: str, rng: random.Random) -> Callable[[], int]:
    """Draws SKU indexes: ``uniform``, or ``zipf`` (the k-th most popular SKU drawn in
    proportion to 1 / k; which SKU has which rank is shuffled, deterministically)."""
    if popularity == "uniform":
        return lambda: rng.randrange(skus)
    if popularity != "zipf":
        raise ValueError(f"popularity must be one of {POPULARITIES}, not {popularity!r}")
    ranked = list(range(skus))
    rng.shuffle(ranked)
    cumulative = list(accumulate(1.0 / (rank + 1) ** ZIPF_EXPONENT for rank in range(skus)))
    total = cumulative[-1]
    return lambda: ranked[min(bisect.bisect_left(cumulative, rng.random() * total), skus - 1)]


def event_mix(
    run_id: str,
    skus: int,
    locations: int,
    count: int,
    seed: int = 7,
    popularity: str = "zipf",
    start: datetime | None = None,
) -> Iterator[Event]:
    """``count`` events of ``MIX`` over SKUs drawn by ``popularity`` and locations
    drawn uniformly, in publish order, one millisecond apart from ``start``."""
    if skus < 1 or locations < 2:
        raise ValueError("the mix needs at least one SKU and two locations")
    rng = random.Random(seed)
    pick_sku = sku_picker(skus, popularity, rng)
    kinds = [kind for kind, _ in MIX]
    weights = [weight for _, weight in MIX]
    # Recent by default (the worker refuses some events older than its state horizon,
    # and every event dated ahead of its clock): a day back, on the second.
    if start is None:
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    reservations: list[_Open] = []
    in_transit: list[_Open] = []
    produced = 0
    while produced < count:
        moment = start + timedelta(milliseconds=produced)
        at = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        kind = rng.choices(kinds, weights)[0]
        sku = sku_name(pick_sku())
        location = location_name(rng.randrange(locations))
        event_id = f"{run_id}-mix-{produced}"
        event: Event
        if kind == "sale":
            event = {"type": "pos.sale", "location_id": location, "quantity": rng.randint(1, 3)}
            event["occurred_at"] = at
        elif kind == "return":
            event = {"type": "pos.return", "location_id": location, "quantity": 1}
            event["occurred_at"] = at
            if rng.random() < 0.2:
                event["disposition"] = "damaged"
        elif kind == "reserve" or (kind == "close" and not reservations):
            ident = f"{run_id}-res-{produced}"
            quantity = rng.randint(1, 4)
            event = {
                "type": "reservation.created",
                "reservation_id": ident,
                "location_id": location,
                "quantity": quantity,
                "occurred_at": at,
                "channel": "online" if rng.random() < 0.5 else "store",
            }
            if rng.random() < 0.25:
                event["expires_at"] = RESERVATION_EXPIRES_AT
            reservations.append(_Open(sku, location, ident, quantity))
        elif kind == "close":
            line = reservations.pop(rng.randrange(len(reservations)))
            sku = line.sku
            event = {"reservation_id": line.ident, "location_id": line.location}
            if rng.random() < 0.5:
                event["type"] = "reservation.released"
            else:
                event["type"] = "reservation.fulfilled"
                event["quantity"] = rng.randint(1, line.quantity)
            event["occurred_at"] = at
        elif kind == "transfer":
            if in_transit and rng.random() < 0.45:
                shipped = in_transit.pop(0)
                sku = shipped.sku
                to = location_name((int(shipped.location[4:]) + 1) % locations)
                event = {
                    "type": "transfer.received",
                    "transfer_id": shipped.ident,
                    "from_location": shipped.location,
                    "to_location": to,
                    "quantity": shipped.quantity,
                    "occurred_at": at,
                }
            else:
                ident = f"{run_id}-tr-{produced}"
                quantity = rng.randint(1, 10)
                to = location_name((int(location[4:]) + 1) % locations)
                event = {
                    "type": "transfer.shipped",
                    "transfer_id": ident,
                    "from_location": location,
                    "to_location": to,
                    "quantity": quantity,
                    "occurred_at": at,
                }
                in_transit.append(_Open(sku, location, ident, quantity))
        else:
            event = {
                "type": "erp.balance",
                "location_id": location,
                "on_hand": rng.randint(500_000, 1_000_000),
                "as_of": at,
            }
        event["event_id"] = event_id
        event["sku"] = sku
        produced += 1
        yield event
