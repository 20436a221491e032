"""The flash sale's Shopify channel (``make load``; ``loadtests.load`` drives it).

One Shopify stand-in (``dev.shopify_admin``, a real HTTP server) holds one shop per
push-policy **variant**, each selling the whole catalogue from one of our locations
(the catalogue's first locations, in turn), on a Standard-plan bucket (2,000 points,
100 a second). Every shop is a push target of its own, and its policy is scoped to its
location, so the variants run side by side in one sale, against the same other
channels and on the same noisy machine:

- ``every-change``: no policy, the default (every change is pushed at once);
- ``min-delta``: ``min_delta`` 5 and ``max_staleness_s`` 30: a policy that saves calls
  (a change is pushed once the figure moved 5 units, or after 30 s; a crossing to or
  from 0 at once, as always);
- ``low-stock``: the same plus ``low_stock`` 5 (at or below 5 units every change is
  pushed at once).

Shoppers check out on the shops (``ShopifyShopper`` in ``loadtests/locustfile.py``);
the stand-in refuses an order beyond the shop's ``available`` and sends a signed
``orders/create`` webhook for every order it takes, which the HTTP API folds as a
reservation at the shop's location (``AVAILABILITY_SHOPIFY_WEBHOOK_DEFAULT_LOCATIONS``:
the stand-in, like Shopify, names no location on an online order).

Before the sale the push must have set every level to our figure; after it, once every
webhook is delivered and folded, the policies are deleted (so every difference left is
pushed at once) and every level must equal our online ATS at its location.
"""

from __future__ import annotations

import logging
import secrets
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
from prometheus_client.parser import text_string_to_metric_families

from dev.shopify_admin.client import StandIn
from infra.config import Settings
from infra.shopify_config import ShopifyTarget
from loadtests.bench_cli import BenchError
from loadtests.bench_stack import free_port
from loadtests.flash_sale import SHOPIFY, Catalogue, Slot

log = logging.getLogger("load")

PLAN: Final = "standard"
#: How long the push may take to set every level before the sale, and to settle after.
SYNC_TIMEOUT: Final = 180.0
SETTLE_TIMEOUT: Final = 90.0

# (sku, location) -> our online ATS there, as the HTTP API shows it.
ReadAts = Callable[[Sequence[str]], Mapping[Slot, int]]


@dataclass(frozen=True)
class Variant:
    target: str  # the push target's name; the shop is flash-<target>.myshopify.com
    policy: Mapping[str, Any] | None  # the push policy at the shop's location
    label: str


VARIANTS: Final = (
    Variant("every-change", None, "no policy (default: every change at once)"),
    Variant("min-delta", {"min_delta": 5, "max_staleness_s": 30}, "min_delta 5, staleness 30 s"),
    Variant(
        "low-stock",
        {"low_stock": 5, "min_delta": 5, "max_staleness_s": 30},
        "low_stock 5 + min_delta 5, staleness 30 s",
    ),
)


@dataclass(frozen=True)
class Shop:
    variant: Variant
    location: str  # ours
    domain: str
    token_env: str
    secret_env: str

    @property
    def policy_id(self) -> str:
        return f"flash-{self.variant.target}"


class ShopifyChannel:
    """The stand-in and its shops, their push targets, and the channel's figures."""

    def __init__(self, log_dir: Path, catalogue: Catalogue, users: int) -> None:
        if len(catalogue.locations) < len(VARIANTS):
            raise BenchError(f"the Shopify channel needs at least {len(VARIANTS)} locations")
        self.catalogue = catalogue
        self.users = users
        self.standin = StandIn(log_dir=log_dir)
        self.shops = [
            Shop(
                variant,
                catalogue.locations[n],
                f"flash-{variant.target}.myshopify.com",
                f"LOAD_SHOPIFY_TOKEN_{n}",
                f"LOAD_SHOPIFY_SECRET_{n}",
            )
            for n, variant in enumerate(VARIANTS)
        ]
        self.env = {
            name: secrets.token_hex(24)
            for shop in self.shops
            for name in (shop.token_env, shop.secret_env)
        }
        self.targets: list[ShopifyTarget] = []
        self.metrics_port = free_port()
        self._before_sale: dict[str, dict[str, Any]] = {}

    @property
    def skus(self) -> list[str]:
        return [*self.catalogue.hot_skus, *self.catalogue.regular_skus]

    # ----------------------------------------------------------------- setting up

    def start(self, http_port: int) -> None:
        """The stand-in, and the shops: tokens, webhooks to our API, items, a location."""
        self.standin.start()
        webhook_url = f"http://127.0.0.1:{http_port}/v1/webhooks/shopify"
        for shop in self.shops:
            self.standin.control(
                "POST",
                "/shops",
                {
                    "domain": shop.domain,
                    "plan": PLAN,
                    "tokens": [{"token": self.env[shop.token_env], "label": "push"}],
                    "webhook": {"url": webhook_url, "secret": self.env[shop.secret_env]},
                },
            )
            seeded = self.standin.control(
                "POST",
                "/seed",
                {
                    "shop": shop.domain,
                    "locations": [{"name": shop.location}],
                    "items": [{"sku": sku} for sku in self.skus],
                },
            )
            self.targets.append(
                ShopifyTarget.model_validate(
                    {
                        "name": shop.variant.target,
                        "shop_domain": shop.domain,
                        "admin_url": self.standin.base_url,
                        "access_token": {"env": shop.token_env},
                        "client_secret": {"env": shop.secret_env},
                        "locations": {shop.location: seeded["locations"][shop.location]["gid"]},
                    }
                )
            )
        log.info(
            "shopify: stand-in %s with %d shops of %d SKUs",
            self.standin.base_url, len(self.shops), len(self.skus),
        )  # fmt: skip

    def settings(self, settings: Settings) -> Settings:
        """``settings`` with the shops as push targets (their webhooks accepted too)."""
        return settings.model_copy(
            update={
                "shopify_targets": self.targets,
                "shopify_webhook_default_locations": {
                    shop.variant.target: shop.location for shop in self.shops
                },
                "push_metrics_port": self.metrics_port,
                "push_status_interval": 0.5,
            }
        )

    def put_policies(self, base_url: str, authorization: str) -> None:
        for shop in self.shops:
            if shop.variant.policy is not None:
                url = f"{base_url}/v1/push-policies/{shop.policy_id}"
                body = {"location_id": shop.location, **shop.variant.policy}
                _request("PUT", url, authorization, body)

    def delete_policies(self, base_url: str, authorization: str) -> None:
        for shop in self.shops:
            if shop.variant.policy is not None:
                _request("DELETE", f"{base_url}/v1/push-policies/{shop.policy_id}", authorization)

    def wait_synced(self, read_ats: ReadAts, alive: Callable[[], None]) -> None:
        """Until every shop shows our figure at every level: the push's first sync."""
        differ = self._wait_equal(read_ats, alive, SYNC_TIMEOUT)
        if differ:
            raise BenchError(f"the push did not sync the shops in {SYNC_TIMEOUT:.0f} s: {differ}")
        self._before_sale = self.push_metrics()

    def locust_config(self) -> dict[str, Any]:
        return {
            "base_url": self.standin.base_url,
            "users": self.users,
            "shops": [{"domain": s.domain, "location": s.location} for s in self.shops],
        }

    # ----------------------------------------------------------------- after the sale

    def wait_delivered(self, alive: Callable[[], None], timeout: float = 60.0) -> dict[str, int]:
        """Until no order webhook is pending; the deliveries by state."""
        deadline = time.monotonic() + timeout
        while True:
            states: dict[str, int] = {}
            for shop in self.shops:
                answer = self.standin.control("GET", "/webhooks/deliveries", shop=shop.domain)
                for delivery in answer:
                    states[delivery["state"]] = states.get(delivery["state"], 0) + 1
            if not states.get("pending") or time.monotonic() > deadline:
                return states
            alive()
            time.sleep(0.5)

    def settle(self, read_ats: ReadAts, alive: Callable[[], None]) -> list[dict[str, Any]]:
        """With the policies deleted: until every level equals our figure; the levels
        that still differ after ``SETTLE_TIMEOUT`` (none: the push converged)."""
        return self._wait_equal(read_ats, alive, SETTLE_TIMEOUT)

    def _wait_equal(
        self, read_ats: ReadAts, alive: Callable[[], None], timeout: float
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            differ = self._differences(read_ats)
            if not differ or time.monotonic() > deadline:
                return differ[:20]
            alive()
            time.sleep(1.0)

    def _differences(self, read_ats: ReadAts) -> list[dict[str, Any]]:
        ours = read_ats(self.skus)
        differ = []
        for shop in self.shops:
            shown = self.shop_levels(shop)
            for sku in self.skus:
                expected = ours.get((sku, shop.location))
                if shown.get(sku) != expected:
                    differ.append(
                        {"shop": shop.variant.target, "sku": sku, "location_id": shop.location,
                         "shop_available": shown.get(sku), "our_ats": expected}
                    )  # fmt: skip
        return differ

    def shop_levels(self, shop: Shop) -> dict[str, int]:
        """SKU -> the shop's ``available`` at its location (levels it has)."""
        view = self.standin.control("GET", "/state", shop=shop.domain)
        skus = {item["id"]: item["sku"] for item in view["items"]}
        return {skus[lv["inventory_item_id"]]: int(lv["available"]) for lv in view["levels"]}

    def push_metrics(self) -> dict[str, dict[str, Any]]:
        """Per target: the push's counters and its lag histogram, now."""
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10
        ) as answer:
            text = answer.read().decode()
        out: dict[str, dict[str, Any]] = {
            s.variant.target: {"buckets": {}, "set_calls": 0.0, "points": 0.0, "stale": 0.0}
            for s in self.shops
        }
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                figures = out.get(sample.labels.get("target", ""))
                if figures is None:
                    continue
                name, labels = sample.name, sample.labels
                if name == "availability_push_lag_seconds_bucket":
                    figures["buckets"][float(labels["le"])] = sample.value
                elif (
                    name == "availability_push_calls_total"
                    and labels.get("operation") == "SetQuantities"
                ):
                    figures["set_calls"] += sample.value
                elif name == "availability_push_points_total":
                    figures["points"] += sample.value
                elif name == "availability_push_failures_total" and labels["kind"] == (
                    "stale_compare"
                ):
                    figures["stale"] += sample.value
                elif name == "availability_push_pending_levels":
                    figures["pending"] = sample.value
        return out

    def report(
        self,
        ledger: Mapping[str, Any],
        by_channel: Mapping[str, Mapping[Slot, int]],
        during_sale: Mapping[str, Mapping[str, Any]],
    ) -> list[dict[str, Any]]:
        """One row per variant: orders, refusals, oversell at its location (Shopify's
        share: the push lag's), and the push's calls, points and lag during the sale."""
        ordered: dict[str, int] = {}
        for _, location, units in ledger.get("shopify", ()):
            ordered[location] = ordered.get(location, 0) + units
        refused = ledger.get("shopify_refused", {})
        rows = []
        for shop in self.shops:
            here = shop.location

            def at_location(channel: str, location: str = here) -> int:
                return sum(n for (_, loc), n in by_channel[channel].items() if loc == location)

            before, after = self._before_sale[shop.variant.target], during_sale[shop.variant.target]
            buckets = {le: after["buckets"].get(le, 0.0) - n for le, n in before["buckets"].items()}
            hot_stock = sum(self.catalogue.stock[(sku, here)] for sku in self.catalogue.hot_skus)
            rows.append(
                {
                    "shop": shop.variant.target,
                    "policy": shop.variant.label,
                    "location_id": here,
                    "hot_units_in_stock": hot_stock,
                    "units_ordered": ordered.get(here, 0),
                    "checkouts_refused_sold_out": int(refused.get(here, 0)),
                    "units_oversold_by_shopify": at_location(SHOPIFY),
                    "units_oversold_by_other_channels": sum(
                        at_location(c) for c in by_channel if c != SHOPIFY
                    ),
                    "push_set_calls": round(after["set_calls"] - before["set_calls"]),
                    "push_points": round(after["points"] - before["points"]),
                    "push_stale_compares": round(after["stale"] - before["stale"]),
                    "push_lag_ms": {
                        "levels_set": round(buckets.get(float("inf"), 0.0)),
                        "p50": histogram_quantile_ms(0.5, buckets),
                        "p99": histogram_quantile_ms(0.99, buckets),
                    },
                }
            )
        return rows

    def close(self) -> None:
        self.standin.close()


def histogram_quantile_ms(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus's ``histogram_quantile`` in ms (linear within the bucket that holds
    rank q; cumulative counts by upper bound), to 2 significant figures: the buckets
    are coarse (50, 100, 250, 500 ms, 1, 2.5, 5, 10, 30, 60 s, ...)."""
    bounds = sorted(buckets)
    total = buckets.get(float("inf"), 0.0)
    if not bounds or total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return _two_figures(lower * 1000)
            share = (rank - below) / (count - below) if count > below else 1.0
            return _two_figures((lower + (bound - lower) * share) * 1000)
        lower, below = bound, count
    return None


def _two_figures(value: float) -> float:
    return float(f"{value:.2g}")


def _request(method: str, url: str, authorization: str, body: Any = None) -> None:
    request = urllib.request.Request(
        url,
        data=None if body is None else orjson.dumps(body),
        headers={"Content-Type": "application/json", "Authorization": authorization},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()
