"""``push``: the Shopify push's status per target, and ``resync`` of a target (README
"Shopify push")."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from infra.audit import audit_record, new_audit_id, record_actions
from infra.config import Settings
from infra.redis_client import connect
from services.cli.operator import operator_actor
from services.push.resync import resync
from services.push.shopify import TargetRefused
from services.push.state import PushState, read_statuses

Say = Callable[[str], None]
#: A status report older than this (seconds) is from a process that is gone.
STALE_REPORT = 30.0


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    push = commands.add_parser(
        "push",
        help="the Shopify push: status per target, resync a target",
        description="The push keeps each target shop's available equal to our figures"
        " (README, Shopify push).",
    )
    actions = push.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser(
        "status",
        help="per target: state, lag, last success, throttled time, failures, unmapped SKUs",
    )
    status.add_argument("--json", action="store_true", help="one JSON object per target")
    again = actions.add_parser(
        "resync",
        help="read the shop's levels and correct every difference (needs the ops scope)",
        description="Reads the target's levels of every SKU (or those named) and sets each"
        " that differs from our figure, compare-and-set against what was read, paced by the"
        " shop's bucket. Exit code 0: the shop agrees; 1: levels still differ.",
    )
    again.add_argument("--target", required=True, help="the target's name")
    again.add_argument(
        "--sku", dest="skus", action="append", default=[], help="only this SKU; repeatable"
    )
    again.add_argument("--dry-run", action="store_true", help="count differences, write none")


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "never"
    moment = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
    return f"{moment.replace('+00:00', 'Z')} ({time.time() - epoch:.0f} s ago)"


async def status(settings: Settings, as_json: bool, say: Say) -> int:
    client = connect(settings.redis_url, cluster=settings.redis_cluster)
    try:
        reports = await read_statuses(client, settings.redis_key_prefix)
        problems = 0
        for config in settings.shopify_targets:
            mine = [
                r
                for r in reports
                if r.get("target") == config.name and time.time() - r.get("at", 0) < STALE_REPORT
            ]
            state = PushState(client, settings.redis_key_prefix, config.name)
            unmapped = await state.unmapped()
            summary: dict[str, Any] = {
                "target": config.name,
                "shop": config.shop_domain,
                "processes": len(mine),
                "state": "no push process reporting"
                if not mine
                else ("stopped" if any(r["state"] == "stopped" for r in mine) else "running"),
                "reason": next((r["reason"] for r in mine if r.get("reason")), None),
                "feed_lag": sum(r.get("feed_lag", 0) for r in mine),
                "pending": sum(r.get("pending", 0) for r in mine),
                "oldest_pending_s": max(
                    (r["oldest_pending_s"] for r in mine if r.get("oldest_pending_s") is not None),
                    default=None,
                ),
                "last_success": max(
                    (r["last_success"] for r in mine if r.get("last_success")), default=None
                ),
                "throttled_s": round(sum(r.get("throttled_s", 0.0) for r in mine), 3),
                "failures": _summed(r.get("failures", {}) for r in mine),
                "held": sum(r.get("held", 0) for r in mine),
                "unmapped_skus": len(unmapped),
                "unmapped": unmapped[:100],
            }
            problems += summary["state"] != "running"
            if as_json:
                say(orjson.dumps(summary).decode())
                continue
            say(f"{config.name} ({config.shop_domain}): {summary['state']}")
            if summary["reason"]:
                say(f"  reason           {summary['reason']}")
            say(f"  feed lag         {summary['feed_lag']} records")
            oldest = summary["oldest_pending_s"]
            say(
                f"  pending          {summary['pending']} levels"
                + ("" if oldest is None else f" (oldest {oldest:.1f} s)")
            )
            say(f"  last success     {_when(summary['last_success'])}")
            say(f"  throttled        {summary['throttled_s']:.1f} s")
            failures = ", ".join(f"{k} {v}" for k, v in summary["failures"].items()) or "none"
            say(f"  failures         {failures}")
            say(f"  held (stale)     {summary['held']} levels")
            shown = " ".join(unmapped[:20]) + (" ..." if len(unmapped) > 20 else "")
            say(f"  unmapped SKUs    {len(unmapped)}{': ' + shown if unmapped else ''}")
        if not settings.shopify_targets:
            say("no target configured (AVAILABILITY_SHOPIFY_TARGETS)")
        return 1 if problems else 0
    finally:
        await client.aclose()


def _summed(parts: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for kind, count in part.items():
            total[kind] = total.get(kind, 0) + int(count)
    return dict(sorted(total.items()))


async def run(args: argparse.Namespace, settings: Settings, say: Say) -> int:
    if args.action == "status":
        return await status(settings, args.json, say)
    if args.action == "resync":
        config = next((t for t in settings.shopify_targets if t.name == args.target), None)
        if config is None:
            names = ", ".join(t.name for t in settings.shopify_targets) or "none"
            say(f"error: no target {args.target!r} (configured: {names})")
            return 2
        if not args.dry_run:
            actor = operator_actor(settings)
            resource = f"push:{config.name}"
            await record_actions(
                settings,
                [
                    (
                        resource,
                        audit_record(
                            audit_id=new_audit_id("push-resync"),
                            actor=actor,
                            action="push.resync",
                            resource=resource,
                            after={"skus": args.skus or "all"},
                        ),
                    )
                ],
            )
        try:
            report = await resync(settings, config, args.skus or None, say, dry_run=args.dry_run)
        except TargetRefused as exc:
            say(f"error: the shop refused the resync: {exc}")
            return 1
        return 1 if report.still_different else 0
    raise AssertionError(f"unhandled action {args.action}")
