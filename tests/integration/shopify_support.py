"""Pieces of the Shopify stand-in tests: a webhook receiver standing in for the
service's endpoint, and the verifier the service will need (HMAC over the raw body)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


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


def iter_topics(received: list[Received]) -> Iterator[str]:
    return (r.topic for r in received)
