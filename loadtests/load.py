"""``python -m loadtests.load`` (``make load``): the flash-sale load test, headless.

Starts a stack of its own on this machine (a development broker on a free port, Redis
at ``--redis-url`` or one it starts, a stream worker, the HTTP API and the gRPC API,
under a unique topic and key prefix), and the Shopify channel
(``loadtests.shopify_channel``: the Shopify stand-in with a shop per push policy
compared, and the push process), seeds the flash-sale catalogue
(``loadtests.flash_sale``: ``--hot-skus`` SKUs with little stock that most shoppers
want, ``--regular-skus`` with more, at ``--locations`` locations), waits until it is
served and the push has set every shop's levels, then runs
``loadtests/locustfile.py`` with Locust, headless, for ``--duration`` seconds with
``--users`` users plus ``--shopify-users`` shoppers on the shops (0: no Shopify
channel, no stand-in, no push).

Online checkouts go through the reserve API (``POST /v1/reservations``; some carts
are released, some left to expire). Afterwards it waits until every order webhook is
delivered, the last cart left to expire has expired and the worker has folded
everything, and checks the service against the ledger of what the users took: every
claimed SKU-location's ``on_hand`` must be its stock minus the units sold in stores,
and its ``reserved`` the units still held online plus those ordered on Shopify there;
then, with the push policies deleted, every shop's levels must equal our online ATS.
It prints Locust's summary, the online checkouts' outcomes (held, refused, conflicts,
released, expired), the reserve API's oversell and the oversell between channels
(definitions in ``loadtests.flash_sale``), by channel and per shop, and those checks,
and writes Locust's CSV and HTML report and ``load.json`` to ``--output-dir``
(default ``bench-results/load``).

Exit code: 0 when every request succeeded, every webhook was delivered, the reserve
API oversold nothing, and the service agrees with the ledger and the shops with the
service; 1 otherwise (a failed request, a unit the reserve API oversold, a
disagreement, or a step that failed).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Final

import orjson
import redis
from aiokafka import AIOKafkaProducer

from dev.broker import DevBroker
from dev.redis_server import ensure_redis
from infra.config import Settings
from infra.kafka import kafka_client_options
from infra.topics import create_topics
from loadtests.bench_cli import BenchError
from loadtests.bench_stack import Stack, bench_settings, free_port, send_all, wait_serving
from loadtests.credentials import bearer
from loadtests.flash_sale import Catalogue, Slot, oversell, oversold_by_channel
from loadtests.shopify_channel import VARIANTS, ShopifyChannel

log = logging.getLogger("load")

REPO_ROOT: Final[Path] = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT: Final[Path] = REPO_ROOT / "bench-results" / "load"
LOCUSTFILE: Final[Path] = Path(__file__).with_name("locustfile.py")
CATALOGUE_AS_OF: Final[str] = "2026-01-01T00:00:00Z"
BATCH_READ: Final[int] = 500
#: After a cart's expiry, the worker's expiry tick (0.1 s) has rewritten its figures.
EXPIRY_MARGIN_S: Final[float] = 2.0


@dataclass(frozen=True)
class Params:
    users: int
    spawn_rate: float
    duration: float
    hot_skus: int
    regular_skus: int
    locations: int
    hot_stock: tuple[int, int]
    regular_stock: tuple[int, int]
    redis_url: str
    partitions: int
    seed: int
    shopify_users: int


async def publish_balances(settings: Settings, catalogue: Catalogue, run_id: str) -> int:
    producer = AIOKafkaProducer(
        **kafka_client_options(settings), acks=1, linger_ms=5, client_id="load-seed"
    )
    await send_all(producer, settings.erp_topic, catalogue.balances(run_id))
    return len(catalogue.stock)


def read_batch(base_url: str, authorization: str, skus: Sequence[str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for start in range(0, len(skus), BATCH_READ):
        body = orjson.dumps({"skus": list(skus[start : start + BATCH_READ]), "channel": "online"})
        request = urllib.request.Request(
            f"{base_url}/v1/availability:batch",
            data=body,
            headers={"Content-Type": "application/json", "Authorization": authorization},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            items.extend(orjson.loads(answer.read())["items"])
    return items


def figures(
    base_url: str, authorization: str, skus: Sequence[str]
) -> dict[tuple[str, str], dict[str, Any]]:
    """(sku, location) -> the location's figures, as the HTTP API shows them."""
    shown: dict[tuple[str, str], dict[str, Any]] = {}
    for item in read_batch(base_url, authorization, skus):
        for location in item["locations"]:
            shown[(item["sku"], location["location_id"])] = location
    return shown


def wait_served(
    base_url: str, authorization: str, catalogue: Catalogue, stack: Stack, timeout: float
) -> None:
    skus = [*catalogue.hot_skus, *catalogue.regular_skus]
    deadline = time.monotonic() + timeout
    while True:
        try:
            shown = figures(base_url, authorization, skus)
            if all(shown.get(slot, {}).get("on_hand") == n for slot, n in catalogue.stock.items()):
                return
            missing = sum(1 for slot in catalogue.stock if slot not in shown)
        except OSError as exc:
            missing = len(catalogue.stock)
            log.info("not served yet (%s)", exc)
        stack.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"catalogue not served within {timeout:.0f} s ({missing} missing)")
        time.sleep(1.0)


def wait_folded(settings: Settings, stack: Stack, timeout: float = 120.0) -> None:
    """Until every worker reports a lag of 0 twice in a row."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        deadline = time.monotonic() + timeout
        zero_seen = 0
        while zero_seen < 2:
            time.sleep(1.0)
            stack.check_alive()
            raw = client.hgetall(f"{settings.redis_key_prefix}:workers")
            statuses = [json.loads(value) for value in raw.values()]
            lag = sum(int(status.get("lag", 0)) for status in statuses)
            zero_seen = zero_seen + 1 if statuses and lag == 0 else 0
            if time.monotonic() > deadline:
                raise BenchError(f"the worker still lags by {lag} events after {timeout:.0f} s")
    finally:
        client.close()


def wait_expired(expiry_us: int, alive: Callable[[], None]) -> None:
    """Until the last cart left to expire has (and the worker's expiry tick has run)."""
    left = expiry_us / 1_000_000 + EXPIRY_MARGIN_S - time.time()
    if left > 0:
        log.info("waiting %.1f s until the last cart left to expire has expired", left)
    while time.time() < expiry_us / 1_000_000 + EXPIRY_MARGIN_S:
        alive()
        time.sleep(0.5)


def online_summary(ledger: Mapping[str, Any]) -> dict[str, int]:
    """The online checkouts through the reserve API: their outcomes and the units
    still held after the sale (kept carts)."""
    outcomes = ledger.get("online", {})
    summary = {
        name: int(outcomes.get(name, 0))
        for name in ("made", "lines", "refused", "conflicts", "kept", "released", "left_to_expire")
    }
    summary["units_held_after_sale"] = sum(n for _, _, n in ledger["reserved"])
    return summary


def online_ats(base_url: str, authorization: str) -> Callable[[Sequence[str]], dict[Slot, int]]:
    """A reader of our online ATS per SKU-location."""

    def read(skus: Sequence[str]) -> dict[Slot, int]:
        shown = figures(base_url, authorization, skus)
        return {slot: int(location["ats"]) for slot, location in shown.items()}

    return read


def agreement(
    catalogue: Catalogue, ledger: Mapping[str, Any], shown: Mapping[tuple[str, str], Any]
) -> dict[str, Any]:
    """Does the service show what the ledger says? (on_hand and reserved per slot; a
    Shopify order is a reservation at the shop's location)"""
    sold = {(s, loc): n for s, loc, n in ledger["sold"]}
    reserved: dict[Slot, int] = {}
    for s, loc, n in [*ledger["reserved"], *ledger.get("shopify", ())]:
        reserved[(s, loc)] = reserved.get((s, loc), 0) + n
    wrong = []
    held_online = sum(n for _, _, n in ledger["reserved"])
    shown_reserved = 0
    for slot in set(sold) | set(reserved):
        expected_on_hand = catalogue.stock[slot] - sold.get(slot, 0)
        figures_ = shown.get(slot)
        got = None if figures_ is None else (figures_["on_hand"], figures_["reserved"])
        shown_reserved += 0 if figures_ is None else int(figures_["reserved"])
        if got != (expected_on_hand, reserved.get(slot, 0)):
            wrong.append(
                {
                    "sku": slot[0],
                    "location_id": slot[1],
                    "expected_on_hand_reserved": [expected_on_hand, reserved.get(slot, 0)],
                    "shown_on_hand_reserved": got,
                }
            )
    return {
        "sku_locations_checked": len(set(sold) | set(reserved)),
        # units held online (kept carts) plus ordered on Shopify, and what the fold shows
        "units_reserved_expected": held_online + sum(n for _, _, n in ledger.get("shopify", ())),
        "units_reserved_shown": shown_reserved,
        "disagree": wrong[:20],
    }


def run_locust(params: Params, config_path: Path, output: Path, host: str, token: str) -> int:
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        host,
        "--users",
        str(params.users + params.shopify_users),
        "--spawn-rate",
        str(params.spawn_rate),
        "--run-time",
        f"{round(params.duration)}s",
        "--stop-timeout",
        "10",
        "--csv",
        str(output / "locust"),
        "--html",
        str(output / "locust.html"),
        "--only-summary",
        "--exit-code-on-error",
        "1",
    ]
    # The credential through the environment (AVAILABILITY_TOKEN), not the config file.
    env = {
        **os.environ,
        "LOAD_CONFIG": str(config_path),
        "PYTHONPATH": str(REPO_ROOT),
        "AVAILABILITY_TOKEN": token,
    }
    log.info(
        "locust: %d users and %d Shopify shoppers for %.0f s",
        params.users, params.shopify_users, params.duration,
    )  # fmt: skip
    return subprocess.run(command, env=env, cwd=REPO_ROOT, timeout=params.duration + 300).returncode


def run(params: Params, output: Path, log_dir: Path) -> tuple[dict[str, Any], int]:
    stack = Stack(log_dir)
    run_id = uuid.uuid4().hex[:8]
    catalogue = Catalogue.build(
        params.hot_skus,
        params.regular_skus,
        params.locations,
        params.hot_stock,
        params.regular_stock,
        CATALOGUE_AS_OF,
        params.seed,
    )
    shopify = (
        ShopifyChannel(log_dir, catalogue, params.shopify_users) if params.shopify_users else None
    )
    try:
        stack.broker = DevBroker(free_port(), log_dir).start()
        stack.redis_proc = ensure_redis(params.redis_url, log_dir)
        settings = bench_settings(
            stack.broker.url, params.redis_url, log_dir / "worker", params.partitions, None
        )
        secrets: dict[str, str] = {}
        if shopify is not None:
            shopify.start(settings.http_port)
            settings, secrets = shopify.settings(settings), shopify.env
        stack.settings = settings
        asyncio.run(create_topics(settings))
        stack.start_service("worker", "streams", settings)
        stack.start_service("http", "services.http", settings, secrets)
        stack.start_service("grpc", "services.grpc", settings)
        if shopify is not None:
            stack.start_service("push", "services.push", settings, secrets)
        grpc_target = f"127.0.0.1:{settings.grpc_port}"
        asyncio.run(wait_serving(grpc_target, stack.check_alive, 60))
        seeded = asyncio.run(publish_balances(settings, catalogue, run_id))
        base_url = f"http://127.0.0.1:{settings.http_port}"
        log.info("seed: %d ERP balances published; waiting until served", seeded)
        authorization = bearer(settings.token.get_secret_value())
        wait_served(base_url, authorization, catalogue, stack, timeout=300)
        read_ats = online_ats(base_url, authorization)
        if shopify is not None:
            shopify.put_policies(base_url, authorization)
            log.info("shopify: policies set; waiting until the push has set every level")
            shopify.wait_synced(read_ats, stack.check_alive)
        ledger_path = output / "ledger.json"
        config = {
            "run_id": run_id,
            "seed": params.seed,
            "bootstrap_servers": settings.bootstrap_servers,
            "grpc_target": grpc_target,
            "topics": {
                "erp": settings.erp_topic,
                "pos": settings.pos_topic,
                "reservations": settings.reservations_topic,
            },
            "catalogue": catalogue.to_data(),
            "ledger_path": str(ledger_path),
        }
        if shopify is not None:
            config["shopify"] = shopify.locust_config()
        config_path = log_dir / "load-config.json"
        config_path.write_text(json.dumps(config))
        code = run_locust(params, config_path, output, base_url, settings.token.get_secret_value())
        ledger = json.loads(ledger_path.read_text())
        log.info("locust exited with %d; waiting until the worker has folded everything", code)
        webhooks: dict[str, int] = {}
        if shopify is not None:
            webhooks = shopify.wait_delivered(stack.check_alive)
        wait_expired(int(ledger.get("expiry_us", 0)), stack.check_alive)
        wait_folded(settings, stack)
        skus = sorted(
            {s for key in ("sold", "reserved", "shopify") for s, _, _ in ledger.get(key, ())}
        )
        check = agreement(catalogue, ledger, figures(base_url, authorization, skus))
        report: dict[str, Any] = {
            "parameters": asdict(params),
            "locust_exit_code": code,
            "oversell": oversell(catalogue.stock, ledger),
            "agreement": check,
            "stats": _locust_stats(output / "locust_stats.csv"),
        }
        failed = code != 0 or bool(check["disagree"])
        failed = failed or report["oversell"]["units_oversold_by_reserve_api"] != 0
        report["online"] = online_summary(ledger)
        if shopify is not None:
            during_sale = shopify.push_metrics()
            log.info("shopify: policies deleted; waiting until every level equals our figure")
            shopify.delete_policies(base_url, authorization)
            differ = shopify.settle(read_ats, stack.check_alive)
            by_channel = oversold_by_channel(catalogue.stock, ledger["claims"])
            report["shopify"] = {
                "shops": shopify.report(ledger, by_channel, during_sale),
                "webhooks": webhooks,
                "levels_differ_after_settling": differ,
            }
            failed = failed or bool(differ) or set(webhooks) - {"delivered"} != set()
        return report, 1 if failed else 0
    finally:
        stack.shutdown()
        if shopify is not None:
            shopify.close()


def _locust_stats(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def render(report: Mapping[str, Any]) -> str:
    over = report["oversell"]
    check = report["agreement"]
    lines = ["", "request                              count  fails  p50 ms  p99 ms  req/s"]
    for row in report["stats"]:
        name = f"{row['Type']} {row['Name']}"[:36]
        lines.append(
            f"  {name:<36} {row['Request Count']:>6} {row['Failure Count']:>6}"
            f" {row['50%']:>7} {row['99%']:>7} {float(row['Requests/s']):>6.0f}"
        )
    online = report.get("online", {})
    reserve_api = over["units_oversold_by_reserve_api"]
    lines += [
        "",
        f"online checkouts (reserve API): {online.get('made', 0)} carts held (201,"
        f" {online.get('lines', 0)} lines), {online.get('refused', 0)} refused (409"
        f" insufficient_stock), {online.get('conflicts', 0)} conflicts;"
        f" {online.get('released', 0)} released (abandoned),"
        f" {online.get('left_to_expire', 0)} left to expire, {online.get('kept', 0)} kept",
        f"ONLINE OVERSOLD by the reserve API: {reserve_api} units"
        + (
            " (ok)"
            if reserve_api == 0
            else " (FAIL: the reserve API promised units that did not exist)"
        ),
        f"units sold in stores {over['units_sold_in_stores']}, held online after the sale"
        f" {over['units_reserved_online']}",
        f"oversell: {over['units_oversold']} units at {over['sku_locations_oversold']} of"
        f" {over['sku_locations_claimed']} SKU-locations claimed (a unit claimed by two"
        " channels within the fold's lag)",
        "  by the later claim's channel: stores"
        f" {over['units_oversold_by_channel']['store']}, online"
        f" {over['units_oversold_by_channel']['online']}, Shopify"
        f" {over['units_oversold_by_channel']['shopify']}",
        f"service agrees with the ledger at {check['sku_locations_checked']} SKU-locations: "
        + ("yes" if not check["disagree"] else f"NO ({len(check['disagree'])} shown differ)")
        + f"; units reserved (held online + ordered on Shopify): ledger"
        f" {check.get('units_reserved_expected')}, fold {check.get('units_reserved_shown')}",
    ]
    if "shopify" in report:
        lines += render_shopify(over, report["shopify"])
    return "\n".join(lines)


def render_shopify(over: Mapping[str, Any], shopify: Mapping[str, Any]) -> list[str]:
    by = over["units_oversold_by_channel"]
    rows = shopify["shops"]
    lines = [
        f"units ordered on Shopify {over['units_ordered_on_shopify']}; oversold by channel:"
        f" stores {by['store']}, online {by['online']}, Shopify {by['shopify']}",
        "  (online: units held a moment after a till sale or Shopify order the worker had"
        " not folded yet)",
        "",
        "Shopify shops, one per push policy (scoped to the shop's location):",
        *(f"  {row['shop']:<13} {row['policy']}" for row in rows),
        "shop            location  ordered  sold out  oversold: Shopify  others"
        "  set calls  stale  points  lag p50 ms  p99 ms",
    ]
    for row in rows:
        lag = row["push_lag_ms"]
        lines.append(
            f"  {row['shop']:<13} {row['location_id']:<8} {row['units_ordered']:>8}"
            f" {row['checkouts_refused_sold_out']:>9} {row['units_oversold_by_shopify']:>18}"
            f" {row['units_oversold_by_other_channels']:>7} {row['push_set_calls']:>10}"
            f" {row['push_stale_compares']:>6} {row['push_points']:>7}"
            f" {_ms(lag['p50']):>11} {_ms(lag['p99']):>7}"
        )
    differ = shopify["levels_differ_after_settling"]
    webhooks = ", ".join(f"{n} {state}" for state, n in sorted(shopify["webhooks"].items()))
    lines += [
        "units oversold because of push lag (Shopify sold beyond what existed): "
        + ", ".join(f"{r['shop']} {r['units_oversold_by_shopify']}" for r in rows),
        f"order webhooks: {webhooks or 'none'}; shops equal our online ATS after the sale: "
        + ("yes" if not differ else f"NO ({len(differ)} shown differ)"),
    ]
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def parse_args(argv: Sequence[str] | None) -> tuple[Params, Path]:
    parser = argparse.ArgumentParser(prog="python -m loadtests.load", description=__doc__)
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--spawn-rate", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--hot-skus", type=int, default=50)
    parser.add_argument("--regular-skus", type=int, default=2000)
    parser.add_argument("--locations", type=int, default=20)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--shopify-users",
        type=int,
        default=30,
        help="shoppers checking out on the Shopify stand-in's shops (0: no Shopify channel)",
    )
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--quick", action="store_true", help="20 users for 20 s (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.duration, args.regular_skus = 20, 20.0, 200
        args.shopify_users = min(args.shopify_users, 10)
    for name in ("users", "hot_skus", "locations", "partitions"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.duration <= 0 or args.spawn_rate <= 0 or args.regular_skus < 0:
        parser.error("--duration and --spawn-rate must be positive, --regular-skus >= 0")
    if args.shopify_users < 0:
        parser.error("--shopify-users must be 0 or more")
    if args.shopify_users and args.locations < len(VARIANTS):
        parser.error(f"the Shopify channel needs --locations {len(VARIANTS)} or more")
    params = Params(
        users=args.users,
        spawn_rate=args.spawn_rate,
        duration=args.duration,
        hot_skus=args.hot_skus,
        regular_skus=args.regular_skus,
        locations=args.locations,
        hot_stock=(1, 6),
        regular_stock=(20, 200),
        redis_url=args.redis_url,
        partitions=args.partitions,
        seed=args.seed,
        shopify_users=args.shopify_users,
    )
    return params, args.output_dir


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    params, output = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="[load %(asctime)s] %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the stand-in client's requests
    signal.signal(signal.SIGTERM, _terminate)
    output.mkdir(parents=True, exist_ok=True)
    log_dir = Path(tempfile.mkdtemp(prefix="load-"))
    code = 1
    try:
        report, code = run(params, output, log_dir)
    except BenchError as exc:
        log.error("load test failed: %s (logs in %s)", exc, log_dir)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted (logs in %s)", log_dir)
        return 130
    finally:
        if code == 0:
            shutil.rmtree(log_dir, ignore_errors=True)
    (output / "load.json").write_text(json.dumps(report, indent=2) + "\n")
    print(render(report), flush=True)
    log.info("reports in %s%s", output, "" if code == 0 else f"; logs kept in {log_dir}")
    return code


if __name__ == "__main__":
    sys.exit(main())
