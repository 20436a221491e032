"""``make run``'s Shopify side: the Admin API stand-in (``dev.shopify_admin``) on
127.0.0.1:8710 (another free port if taken), a shop seeded with the sample
catalogue's locations and SKUs, and the development target that the push process
(``python -m services.push``) writes to.

The access token and the app's client secret are random per run, handed to the
stand-in, the push and the HTTP API through their environment only (never printed).
The stand-in sends the shop's order webhooks to the HTTP API
(``/v1/webhooks/shopify``), signed with that secret; online orders are held at the
first sample location. A target configured in ``AVAILABILITY_SHOPIFY_TARGETS``
is used as it is (the stand-in is still started, for trying things out).
"""

from __future__ import annotations

import json
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from dev.sample_data import location_names
from dev.shopify_admin.client import StandIn, free_port
from dev.shopify_admin.schema_cache import SchemaUnavailable
from infra.config import Settings
from infra.shopify_config import ShopifyTarget

PORT = 8710
#: The sample catalogue's SKUs (``dev.sample_data``: SKU-0001.. and 4 locations) and more.
SKUS = 200
LOCATIONS = 4
TOKEN_ENV = "AVAILABILITY_DEV_SHOPIFY_TOKEN"
SECRET_ENV = "AVAILABILITY_DEV_SHOPIFY_CLIENT_SECRET"


class ShopifyDevError(RuntimeError):
    pass


@dataclass
class DevShop:
    standin: StandIn
    env: dict[str, str]  # for the push and the HTTP API: targets, token, client secret

    @property
    def url(self) -> str:
        return self.standin.base_url

    def close(self) -> None:
        self.standin.close()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def start_dev_shop(settings: Settings, state_dir: Path) -> DevShop:
    token = f"shpat_dev_{secrets.token_hex(16)}"
    client_secret = secrets.token_hex(32)
    port = PORT if _port_free(PORT) else free_port()
    webhook_url = f"http://127.0.0.1:{settings.http_port}/v1/webhooks/shopify"
    standin = StandIn(
        log_dir=state_dir,
        port=port,
        args=("--webhook-url", webhook_url),
        env={
            "SHOPIFY_STANDIN_ACCESS_TOKEN": token,
            "SHOPIFY_STANDIN_CLIENT_SECRET": client_secret,
            **_python_env(),
        },
    )
    try:
        standin.start()
    except SchemaUnavailable as exc:
        standin.close()
        raise ShopifyDevError(f"the Shopify stand-in needs its schema: {exc}") from exc
    except Exception:
        standin.close()
        raise
    names = location_names(LOCATIONS)
    seeded = standin.seed(
        locations=[{"name": name} for name in names],
        items=[{"sku": f"SKU-{i:04d}"} for i in range(1, SKUS + 1)],
    )
    targets = [t.model_dump(mode="json") for t in settings.shopify_targets]
    if not targets:
        dev = ShopifyTarget.model_validate(
            {
                "name": "dev",
                "shop_domain": standin.shop,
                "admin_url": standin.base_url,
                "access_token": {"env": TOKEN_ENV},
                "client_secret": {"env": SECRET_ENV},
                "locations": {name: v["gid"] for name, v in seeded["locations"].items()},
            }
        )
        targets = [dev.model_dump(mode="json")]
    env = {
        "AVAILABILITY_SHOPIFY_TARGETS": json.dumps(targets),
        TOKEN_ENV: token,
        SECRET_ENV: client_secret,
    }
    if not settings.shopify_webhook_default_locations:
        env["AVAILABILITY_SHOPIFY_WEBHOOK_DEFAULT_LOCATIONS"] = json.dumps({"dev": names[0]})
    return DevShop(standin, env)


def _python_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("AVAILABILITY_")}
