"""The flash-sale load test (``make load`` runs it headless; see ``loadtests.load``).

Five kinds of users at once against a running service:

- ``Shopper`` (HTTP): product pages (a single read, mostly of the flash-sale SKUs),
  collection pages (a batch read of 24 SKUs) and checkouts through the reserve API
  (``POST /v1/reservations``): a cart of 1-3 SKUs, one unit each, held all or
  nothing; some carts are picked up in a store (every line names it), the others let
  the service place each line. A cart held (201) is kept, abandoned (``DELETE`` a
  moment later) or left to expire (a short ``expires_in_s``); 409
  ``insufficient_stock`` means sold out, and the shopper leaves.
- ``StoreTerminal`` (gRPC, a POS till at one store): ``GetAvailability`` of a SKU at
  its store and, if the store shows ATS, sell one unit (a ``pos.sale`` event).
- ``ShopifyShopper`` (HTTP, against the Shopify stand-in; only when the run's
  configuration has a ``shopify`` section): checkouts of one unit at one of the
  stand-in's shops, at that shop's location. The shop refuses one beyond its
  ``available`` (409: sold out there); an order it takes lowers its ``available`` and
  comes back to the service as a signed ``orders/create`` webhook (a reservation).
- ``ErpFeed``: a storm of ERP balances (``erp.balance``, as of a moment ago, with
  the stock minus the store sales before that moment: what an ERP that has the
  tills' sales would send).

Events are published with ``kafka-python`` (blocking sockets, which gevent makes
cooperative); each publish counts as a request of type ``KAFKA``, so a failed one
fails the run like a failed HTTP or gRPC call. The run's configuration is the JSON
file named by ``LOAD_CONFIG`` (written by ``loadtests.load``); at the end the ledger
of claims goes to its ``ledger_path`` for the oversell count
(``loadtests.flash_sale``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
import orjson
from kafka import KafkaProducer
from locust import FastHttpUser, User, between, constant_pacing, events, task

from infra.config import get_settings
from infra.kafka import kafka_client_options
from loadtests.credentials import bearer, grpc_metadata
from loadtests.flash_sale import Catalogue, Ledger
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from services.grpc.gen.availability.v1 import availability_pb2_grpc as pb_grpc

grpc_gevent.init_gevent()
logging.getLogger("kafka").setLevel(logging.WARNING)

CONFIG: dict[str, Any] = json.loads(Path(os.environ["LOAD_CONFIG"]).read_text())
CATALOGUE = Catalogue.from_data(CONFIG["catalogue"])
TOKEN = get_settings().token.get_secret_value()  # AVAILABILITY_TOKEN, set by loadtests.load
METADATA = grpc_metadata(TOKEN)
LEDGER = Ledger()
HOT_SHARE = 0.8  # of product-page views and checkouts that are for a flash-sale SKU
COLLECTION_SIZE = 24
ERP_BATCH = 20  # balances per ERP feed round
# An ERP balance is as of this long ago: every store sale that happened before then
# has been acknowledged by the broker (and is in the ledger) by the time it is sent.
ERP_LAG_SECONDS = 2.0
# Online carts (the reserve API): the share picked up in a store (every line names
# that store; the others leave the location to the service), abandoned (released a
# moment later) and left to expire after a few seconds; the rest are kept.
PICKUP_SHARE = 0.4
ABANDON_SHARE = 0.25
ABANDON_AFTER_S = (0.5, 3.0)
EXPIRE_SHARE = 0.2
EXPIRING_IN_S = (2, 5)
KEPT_EXPIRES_IN_S = 900
_RNG = random.Random(CONFIG.get("seed", 5))
_PRODUCER: KafkaProducer | None = None
_counter = [0]
_tills = [0]
SHOPIFY: dict[str, Any] | None = CONFIG.get("shopify")


def producer() -> KafkaProducer:
    global _PRODUCER
    if _PRODUCER is None:
        # The run's broker (CONFIG), reached the way the settings say (the security
        # options: kafka-python takes the same names as aiokafka).
        _PRODUCER = KafkaProducer(
            **kafka_client_options(get_settings())
            | {"bootstrap_servers": CONFIG["bootstrap_servers"]},
            acks=1,
            linger_ms=2,
            key_serializer=str.encode,
        )
    return _PRODUCER


def rfc3339(seconds: float) -> str:
    """``seconds`` since the epoch as RFC 3339 UTC with microseconds."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_id(kind: str) -> str:
    _counter[0] += 1
    return f"{CONFIG['run_id']}-{kind}-{os.getpid()}-{_counter[0]}"


def publish(topic: str, event: dict[str, Any]) -> bool:
    """Publish and wait for the broker's ack; reported to Locust as a KAFKA request."""
    started = time.perf_counter()
    failure: Exception | None = None
    try:
        producer().send(topic, orjson.dumps(event), key=event["sku"]).get(timeout=10)
    except Exception as exc:  # reported as a failed request below
        failure = exc
    events.request.fire(  # type: ignore[no-untyped-call]
        request_type="KAFKA",
        name=event["type"],
        response_time=(time.perf_counter() - started) * 1000,
        response_length=0,
        exception=failure,
        context={},
    )
    return failure is None


def pick_sku(rng: random.Random) -> str:
    if rng.random() < HOT_SHARE or not CATALOGUE.regular_skus:
        return rng.choice(CATALOGUE.hot_skus)
    return rng.choice(CATALOGUE.regular_skus)


class Shopper(FastHttpUser):
    weight = 8
    wait_time = between(0.05, 0.3)
    default_headers = {"Authorization": bearer(TOKEN)}  # noqa: RUF012

    @task(6)
    def product_page(self) -> None:
        sku = pick_sku(_RNG)
        self.client.get(f"/v1/availability/{sku}?channel=online", name="product page")

    @task(2)
    def collection_page(self) -> None:
        skus = [pick_sku(_RNG) for _ in range(COLLECTION_SIZE)]
        self.client.post(
            "/v1/availability:batch",
            json={"skus": skus, "channel": "online"},
            name="collection page",
        )

    @task(2)
    def checkout(self) -> None:
        """A cart of 1-3 SKUs reserved through the reserve API, all or nothing."""
        cart = cart_request(_RNG)
        fate = cart.pop("_fate")
        with self.client.post(
            "/v1/reservations", json=cart, name="reserve (cart)", catch_response=True
        ) as answer:
            if answer.status_code == 409:
                code = (answer.json().get("error") or {}).get("code")
                if code == "insufficient_stock":  # sold out: the shopper leaves
                    LEDGER.count("refused")
                    answer.success()
                elif code == "conflict":
                    LEDGER.count("conflicts")
                    answer.success()
                else:
                    answer.failure(f"409 {code}")
                return
            if answer.status_code != 201:
                answer.failure(f"status {answer.status_code}: {answer.text[:200]}")
                return
            placed = answer.json()
        held_at = int(time.time() * 1_000_000)  # the hold was placed before its answer
        lines = [(x["sku"], x["location_id"], int(x["quantity"])) for x in placed["lines"]]
        LEDGER.count("made")
        LEDGER.count("lines", len(lines))
        for sku, location, quantity in lines:
            LEDGER.reservation(sku, location, quantity, held_at)
        if fate == "expire":
            expires_us = parse_rfc3339_us(placed["expires_at"])
            for sku, location, quantity in lines:
                LEDGER.freed(sku, location, quantity, expires_us)
            LEDGER.expiring_until(expires_us)
            LEDGER.count("left_to_expire")
        elif fate == "abandon":
            time.sleep(_RNG.uniform(*ABANDON_AFTER_S))  # cooperative: Locust patches it
            released_at = int(time.time() * 1_000_000)  # freed after this instant
            with self.client.delete(
                f"/v1/reservations/{cart['reservation_id']}",
                name="release (abandoned cart)",
                catch_response=True,
            ) as answer:
                if answer.status_code != 204:
                    answer.failure(f"status {answer.status_code}: {answer.text[:200]}")
                    return
            for sku, location, quantity in lines:
                LEDGER.freed(sku, location, quantity, released_at)
            LEDGER.count("released")
        else:
            LEDGER.count("kept")


def cart_request(rng: random.Random) -> dict[str, Any]:
    """A reserve request: 1-3 distinct SKUs (the first a flash-sale SKU), one unit each;
    a click-and-collect cart names its store on every line, the others leave the
    location to the service. ``_fate`` (not sent): ``keep``, ``abandon`` (released a
    moment later) or ``expire`` (a short expiry, left to run out)."""
    skus = [rng.choice(CATALOGUE.hot_skus)]
    for _ in range(rng.randint(0, 2)):
        sku = pick_sku(rng)
        if sku not in skus:
            skus.append(sku)
    pickup = rng.choice(CATALOGUE.locations) if rng.random() < PICKUP_SHARE else None
    lines: list[dict[str, Any]] = []
    for sku in skus:
        line: dict[str, Any] = {"sku": sku, "quantity": 1}
        if pickup is not None:
            line["location_id"] = pickup
        lines.append(line)
    draw = rng.random()
    fate = "abandon" if draw < ABANDON_SHARE else "keep"
    expires_in_s = KEPT_EXPIRES_IN_S
    if draw >= 1 - EXPIRE_SHARE:
        fate, expires_in_s = "expire", rng.randint(*EXPIRING_IN_S)
    return {
        "reservation_id": event_id("cart"),
        "channel": "online",
        "expires_in_s": expires_in_s,
        "lines": lines,
        "_fate": fate,
    }


def parse_rfc3339_us(text: str) -> int:
    """Microseconds since the epoch of an RFC 3339 UTC timestamp (``...Z``)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


class GrpcUser(User):
    """A Locust user with a gRPC channel whose calls are reported as requests."""

    abstract = True

    def on_start(self) -> None:
        self.channel = grpc.insecure_channel(CONFIG["grpc_target"])
        self.stub = pb_grpc.AvailabilityServiceStub(self.channel)

    def on_stop(self) -> None:
        self.channel.close()

    def call(self, name: str, method: Callable[..., Any], request: Any) -> Any:
        started = time.perf_counter()
        failure: Exception | None = None
        answer = None
        try:
            answer = method(request, timeout=5, metadata=METADATA)
        except grpc.RpcError as exc:
            failure = exc
        events.request.fire(  # type: ignore[no-untyped-call]
            request_type="gRPC",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0 if answer is None else answer.ByteSize(),
            exception=failure,
            context={},
        )
        return answer


class StoreTerminal(GrpcUser):
    weight = 3
    wait_time = between(0.1, 0.5)

    def on_start(self) -> None:
        super().on_start()
        # Stores in turn: each of the first locations has a till (the Shopify shops'
        # locations among them, so that every shop competes with one).
        self.store = CATALOGUE.locations[_tills[0] % len(CATALOGUE.locations)]
        _tills[0] += 1

    @task
    def ring_up(self) -> None:
        sku = pick_sku(_RNG)
        request = pb.GetAvailabilityRequest(sku=sku, channel="store", location_id=self.store)
        answer = self.call("GetAvailability (till)", self.stub.GetAvailability, request)
        if answer is None or answer.ats < 1:
            return
        occurred = time.time()
        sale = {
            "type": "pos.sale",
            "event_id": event_id("sale"),
            "sku": sku,
            "location_id": self.store,
            "quantity": 1,
            "occurred_at": rfc3339(occurred),
        }
        if publish(CONFIG["topics"]["pos"], sale):
            LEDGER.sale(sku, self.store, 1, int(occurred * 1_000_000))


class ShopifyShopper(FastHttpUser):
    """Checkouts on the Shopify stand-in (its control API's ``/_standin/checkout``: an
    order as Shopify's checkout places it), at a shop chosen at random."""

    abstract = SHOPIFY is None  # no Shopify channel in this run
    fixed_count = 0 if SHOPIFY is None else int(SHOPIFY["users"])
    wait_time = between(0.1, 0.5)

    @task
    def checkout(self) -> None:
        assert SHOPIFY is not None
        shop = _RNG.choice(SHOPIFY["shops"])
        sku = pick_sku(_RNG)
        body = {
            "shop": shop["domain"],
            "location": shop["location"],
            "line_items": [{"sku": sku, "quantity": 1}],
        }
        sent = time.time()
        with self.client.post(  # an absolute URL: --host is our service
            f"{SHOPIFY['base_url']}/_standin/checkout",
            json=body,
            name="shopify checkout",
            catch_response=True,
        ) as answer:
            if answer.status_code == 200:
                # When the shop took the order: between the request and its answer.
                placed = (sent + time.time()) / 2
                LEDGER.shopify_order(sku, shop["location"], 1, int(placed * 1_000_000))
            elif answer.status_code == 409:  # sold out at the shop: the shopper leaves
                LEDGER.shopify_refused(shop["location"])
                answer.success()
            else:
                answer.failure(f"status {answer.status_code}: {answer.text[:200]}")


class ErpFeed(User):
    weight = 1
    fixed_count = 1
    wait_time = constant_pacing(0.05)  # ERP_BATCH balances 20 times a second

    @task
    def balances(self) -> None:
        as_of = time.time() - ERP_LAG_SECONDS
        as_of_text = rfc3339(as_of)
        for _ in range(ERP_BATCH):
            sku = pick_sku(_RNG)
            location = _RNG.choice(CATALOGUE.locations)
            on_hand = CATALOGUE.stock[(sku, location)] - LEDGER.sold_until(
                sku, location, int(as_of * 1_000_000)
            )
            publish(
                CONFIG["topics"]["erp"],
                {
                    "type": "erp.balance",
                    "event_id": event_id("erp"),
                    "sku": sku,
                    "location_id": location,
                    "on_hand": on_hand,
                    "as_of": as_of_text,
                },
            )


@events.test_stop.add_listener  # type: ignore[untyped-decorator]
def write_ledger(**_: Any) -> None:
    if _PRODUCER is not None:
        _PRODUCER.flush(timeout=10)
    Path(CONFIG["ledger_path"]).write_text(json.dumps(LEDGER.to_data()))
