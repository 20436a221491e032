"""Everything one stand-in process holds: shops and their tokens, orders, the call
log, faults and webhook deliveries. Access tokens and client secrets live only here:
the log and the control API show a token's label, never the token."""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from dev.shopify_admin.faults import Faults
from dev.shopify_admin.model import Ids, Shop, Token
from dev.shopify_admin.orders import Order
from dev.shopify_admin.webhooks import WebhookSender, WebhookTarget

CALL_LOG_SIZE: Final = 20_000


@dataclass
class ShopState:
    shop: Shop
    webhooks: WebhookTarget = field(default_factory=WebhookTarget)
    orders: dict[int, Order] = field(default_factory=dict)
    order_numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1001))


class StandInState:
    def __init__(self, fault_seed: int = 0) -> None:
        self.ids = Ids()
        self.shops: dict[str, ShopState] = {}
        self._tokens: dict[str, tuple[str, Token]] = {}
        self.faults = Faults(fault_seed)
        self.calls: deque[dict[str, Any]] = deque(maxlen=CALL_LOG_SIZE)
        self._call_numbers = itertools.count(1)
        self.webhooks = WebhookSender()

    def reset(self) -> None:
        self.shops.clear()
        self._tokens.clear()
        self.faults.clear()
        self.calls.clear()
        self.webhooks.deliveries.clear()

    def shop(self, domain: str) -> ShopState:
        state = self.shops.get(domain)
        if state is None:
            state = self.shops[domain] = ShopState(Shop(domain))
        return state

    def add_token(self, domain: str, secret: str, token: Token) -> None:
        self.shop(domain)
        self._tokens[secret] = (domain, token)

    def authenticate(self, secret: str | None) -> tuple[ShopState, Token] | None:
        found = self._tokens.get(secret or "")
        if found is None:
            return None
        return self.shops[found[0]], found[1]

    def tokens_of(self, domain: str) -> list[dict[str, Any]]:
        return [
            {
                "label": t.label,
                "scopes": None if t.scopes is None else sorted(t.scopes),
                "forbidden": t.forbidden,
            }
            for d, t in self._tokens.values()
            if d == domain
        ]

    def log_call(self, entry: dict[str, Any]) -> None:
        entry["seq"] = next(self._call_numbers)
        self.calls.append(entry)
