"""``python -m dev.shopify_admin``: run the Shopify Admin API stand-in.

Secrets come from the environment, never from arguments (which ``ps`` shows):
``SHOPIFY_STANDIN_ACCESS_TOKEN`` (an access token of the default shop with every scope)
and ``SHOPIFY_STANDIN_CLIENT_SECRET`` (the app's client secret that signs webhooks).
More shops, tokens with fewer scopes, locations and items: the control API
(``/_standin/``, README "Shopify stand-in (development)").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path

from dev.shopify_admin.bucket import PLANS
from dev.shopify_admin.schema_cache import SchemaUnavailable, ensure_schema
from dev.shopify_admin.server import ServerConfig, serve


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m dev.shopify_admin",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=8710, help="port (default 8710)")
    parser.add_argument("--shop", default="standin.myshopify.com", help="the default shop's domain")
    parser.add_argument(
        "--plan",
        choices=sorted(PLANS),
        default="standard",
        help="bucket size and restore rate of the default shop's plan",
    )
    parser.add_argument("--bucket-size", type=float, help="maximumAvailable (overrides --plan)")
    parser.add_argument("--restore-rate", type=float, help="points/s (overrides --plan)")
    parser.add_argument("--webhook-url", help="where the default shop's webhooks go")
    parser.add_argument("--fault-seed", type=int, default=0, help="seed of probabilistic faults")
    parser.add_argument("--schema", type=Path, help="the admin_2026-10.json.gz to use")
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="measure inventorySetQuantities calls of 250 items per second, then exit",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of --self-test")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # One line per failed webhook attempt (topic and webhook id; never a secret).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the self-test's control calls
    try:
        schema = args.schema or ensure_schema()
    except SchemaUnavailable as exc:
        print(f"shopify stand-in: {exc}", file=sys.stderr)
        return 2
    if args.self_test:
        from dev.shopify_admin.selftest import self_test

        return self_test(schema, args.seconds)
    config = ServerConfig(
        host=args.host,
        port=args.port,
        shop=args.shop,
        plan=args.plan,
        bucket_size=args.bucket_size,
        restore_rate=args.restore_rate,
        access_token=os.environ.get("SHOPIFY_STANDIN_ACCESS_TOKEN") or None,
        client_secret=os.environ.get("SHOPIFY_STANDIN_CLIENT_SECRET") or None,
        webhook_url=args.webhook_url,
        fault_seed=args.fault_seed,
        schema_path=schema,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
