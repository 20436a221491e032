"""Pieces of the Shopify stand-in tests: the stand-in as a real process with a seeded
shop (fixtures ``standin``, module-scoped, and ``shop``), the access tokens, a webhook
receiver standing in for the service's endpoint, and the verifier the service will need
(HMAC over the raw body)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

from dev.shopify_admin.client import StandIn
from infra import shopify_documents as docs

#: Fresh secrets every session: access tokens of the seeded shop and its client secret.
TOKEN = f"shpat_{secrets.token_hex(16)}"
READ_ONLY = f"shpat_{secrets.token_hex(16)}"
PRODUCTS_ONLY = f"shpat_{secrets.token_hex(16)}"
FORBIDDEN = f"shpat_{secrets.token_hex(16)}"
CLIENT_SECRET = secrets.token_hex(16)


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    with StandIn(log_dir=tmp_path_factory.mktemp("standin")) as server:
        server.start()
        yield server


@dataclass
class Shop:
    standin: StandIn
    locations: dict[str, str]
    items: dict[str, str]

    def gql(self, query: str, variables: dict[str, Any] | None = None, token: str = TOKEN) -> Any:
        status, body = self.standin.graphql(query, variables, token=token)
        assert status == 200, body
        return body

    def set_available(
        self,
        quantities: list[tuple[str, str, int, int | None]],
        key: str | None = None,
        token: str = TOKEN,
    ) -> Any:
        return self.gql(docs.SET_QUANTITIES, set_variables(self, quantities, key), token)

    def available(self, sku: str, location: str) -> int:
        return int(self.standin.level(sku, location)["available"])


def set_variables(
    shop: Shop, quantities: list[tuple[str, str, int, int | None]], key: str | None = None
) -> dict[str, Any]:
    return {
        "idempotencyKey": key or str(uuid.uuid4()),
        "input": {
            "name": "available",
            "reason": "correction",
            "referenceDocumentUri": "gid://availability-service/Push/1",
            "quantities": [
                {
                    "inventoryItemId": shop.items[sku],
                    "locationId": shop.locations[location],
                    "quantity": quantity,
                    "changeFromQuantity": change_from,
                }
                for sku, location, quantity, change_from in quantities
            ],
        },
    }


@pytest.fixture
def shop(standin: StandIn) -> Shop:
    standin.control("POST", "/reset")
    standin.put_shop(
        tokens=[
            {"token": TOKEN, "label": "push"},
            {"token": READ_ONLY, "label": "reader", "scopes": ["read_inventory", "read_locations"]},
            {"token": PRODUCTS_ONLY, "label": "catalogue", "scopes": ["read_products"]},
            {"token": FORBIDDEN, "label": "unapproved", "forbidden": True},
        ],
        plan="standard",
    )
    seeded = standin.seed(
        locations=[{"name": "STORE-001"}, {"name": "WH-1"}],
        items=[
            {"sku": "SKU-1", "levels": {"STORE-001": {"available": 12}, "WH-1": {"available": 40}}},
            {"sku": "SKU-2", "levels": {"STORE-001": {"available": 3, "committed": 1}}},
            {"sku": "SKU-3", "levels": {"WH-1": {"available": 0}}},
        ],
    )
    return Shop(
        standin,
        {name: v["gid"] for name, v in seeded["locations"].items()},
        {sku: v["gid"] for sku, v in seeded["items"].items()},
    )


def codes(body: Any) -> list[str]:
    return [e.get("extensions", {}).get("code") for e in body.get("errors", [])]


def verify_shopify_hmac(body: bytes, header: str | None, secret: str) -> bool:
    """Shopify's check: base64 HMAC-SHA256 of the raw body, compared in constant time."""
    if not header:
        return False
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    return hmac.compare_digest(expected, header.encode())


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def topic(self) -> str:
        return self.headers["x-shopify-topic"]

    @property
    def webhook_id(self) -> str:
        return self.headers["x-shopify-webhook-id"]

    def json(self) -> Any:
        return orjson.loads(self.body)


class WebhookReceiver:
    """An HTTP endpoint on loopback recording every request; answers 200 unless told
    otherwise by ``statuses`` (consumed one per request)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.statuses: list[int] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.received.append(Received(headers, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/webhooks/shopify"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"{len(self.received)} webhook requests, expected {count}")


@pytest.fixture
def receiver(shop: Shop) -> Iterator[WebhookReceiver]:
    """A receiver the seeded shop sends its webhooks to (signed with CLIENT_SECRET)."""
    with WebhookReceiver() as endpoint:
        shop.standin.webhooks(url=endpoint.url, secret=CLIENT_SECRET, retry_delays=[0.2, 0.2, 0.2])
        yield endpoint
