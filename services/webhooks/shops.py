"""The shops whose webhooks are accepted: the configured Shopify targets
(``AVAILABILITY_SHOPIFY_TARGETS``) that name a client secret, found by the
``X-Shopify-Shop-Domain`` header.

Client secrets are read once, when the API starts (like the gRPC server's TLS files:
a new secret needs a restart), and held as ``SecretStr``: never logged, never shown.
A target whose secret cannot be read is logged (naming where it should be, never a
value) and its webhooks are refused until it can.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pydantic import SecretStr

from availability.identifiers import is_location
from infra.config import Settings
from infra.secrets import SecretNotFound
from infra.shopify_config import ShopifyTarget
from services.webhooks.orders import ShopMapping

log = logging.getLogger(__name__)


class WebhookConfigError(ValueError):
    """The webhook settings contradict each other; the message names the setting."""


@dataclass(frozen=True, slots=True)
class WebhookShop:
    domain: str
    mapping: ShopMapping
    secret: SecretStr = field(repr=False)

    @property
    def name(self) -> str:
        return self.mapping.target


class WebhookShops:
    def __init__(self, shops: Iterable[WebhookShop]) -> None:
        self._by_domain = {shop.domain.lower(): shop for shop in shops}

    def __len__(self) -> int:
        return len(self._by_domain)

    def by_domain(self, domain: str) -> WebhookShop | None:
        """The shop a webhook says it comes from (domains compare without case)."""
        return self._by_domain.get(domain.strip().lower())

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookShops:
        targets = settings.shopify_targets
        defaults = settings.shopify_webhook_default_locations
        check_default_locations(defaults, targets)
        shops = []
        for target in targets:
            if target.client_secret is None:
                log.info(
                    "shopify target %r has no client_secret: its webhooks are refused", target.name
                )
                continue
            try:
                secret = target.client_secret.read()
            except SecretNotFound as exc:
                # Where it should be, never a value (there is none to show anyway).
                log.error(
                    "shopify target %r: client secret not readable (%s); its webhooks are"
                    " refused until the API restarts with it",
                    target.name,
                    exc,
                )
                continue
            shops.append(WebhookShop(target.shop_domain, mapping_of(target, defaults), secret))
        return cls(shops)


def mapping_of(target: ShopifyTarget, defaults: Mapping[str, str]) -> ShopMapping:
    """The target's location map turned round (shop GID -> ours). Two of our locations
    on one shop location: the first listed wins, as ``ShopifyTarget.location_of``."""
    by_gid: dict[str, str] = {}
    for ours, theirs in target.locations.items():
        by_gid.setdefault(theirs, ours)
    return ShopMapping(target.name, target.channel, by_gid, defaults.get(target.name))


def check_default_locations(defaults: Mapping[str, str], targets: Iterable[ShopifyTarget]) -> None:
    names = {target.name for target in targets}
    for name, location in sorted(defaults.items()):
        if name not in names:
            raise WebhookConfigError(
                f"AVAILABILITY_SHOPIFY_WEBHOOK_DEFAULT_LOCATIONS names target {name!r},"
                " which AVAILABILITY_SHOPIFY_TARGETS does not define"
            )
        if not is_location(location):
            raise WebhookConfigError(
                f"AVAILABILITY_SHOPIFY_WEBHOOK_DEFAULT_LOCATIONS[{name!r}] must be a location"
                f" id (1-64 characters of [A-Za-z0-9._:/-]), got {location!r}"
            )
