"""The gRPC benchmark's figures: summaries of what the load processes recorded
(latency of each event from publish to watch client, GetAvailability latency), the
targets, and the table it prints."""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from loadtests.bench_grpc_loads import GetResult, OnHandLog, ProduceResult
from loadtests.bench_measure import summarize_ms

WATCH_P99_TARGET_MS: Final[float] = 150.0
GET_P99_TARGET_MS: Final[float] = 3.0


def get_summary(result: GetResult, rate: float, callers: int) -> dict[str, Any]:
    elapsed = result.last_done - result.first_sent
    done = len(result.latencies)
    return {
        "target_rate": rate,
        "callers": callers,
        "requests": done,
        "errors": result.errors,
        "achieved_rate": round(done / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_ms": summarize_ms(result.latencies),
        "max_behind_schedule_ms": round(result.max_behind_schedule * 1000, 2),
        "client_cpu_percent": round(100 * result.cpu_seconds / elapsed, 1) if elapsed else None,
    }


class ReachIndex:
    """For each (SKU, location): when on_hand first reached each new low, so that
    "first time on_hand <= x" is a binary search."""

    def __init__(self, recorded: OnHandLog) -> None:
        self.times: dict[int, list[float]] = {}
        self.negated_lows: dict[int, list[int]] = {}  # increasing
        for when, slot, on_hand in zip(
            recorded.times, recorded.slots, recorded.on_hands, strict=True
        ):
            lows = self.negated_lows.setdefault(slot, [])
            if lows and -on_hand <= lows[-1]:
                continue  # not below what was already seen
            lows.append(-on_hand)
            self.times.setdefault(slot, []).append(when)

    def first_reached(self, slot: int, on_hand: int) -> float:
        """When on_hand of ``slot`` was first at or below ``on_hand``; NaN if never."""
        lows = self.negated_lows.get(slot)
        if not lows:
            return math.nan
        position = bisect.bisect_left(lows, -on_hand)
        return self.times[slot][position] if position < len(lows) else math.nan


def watch_summary(
    produced: ProduceResult,
    watched: OnHandLog,
    tapped: OnHandLog | None,
    duration: float,
    window: float,
) -> dict[str, Any]:
    published = np.frombuffer(produced.publish_times, dtype=float)
    count = len(published)
    watch_index = ReachIndex(watched)
    received = np.array(
        [
            watch_index.first_reached(slot, on_hand)
            for slot, on_hand in zip(produced.slots, produced.expected_on_hands, strict=True)
        ]
    )
    delivered = ~np.isnan(received)
    latency = received - published
    start = float(published[0]) if count else 0.0
    last = float(published[-1]) if count else 0.0
    windows = []
    for begin in np.arange(start, start + duration, window):
        chosen = delivered & (published >= begin) & (published < begin + window)
        summary = summarize_ms(latency[chosen])
        windows.append(
            {
                "from_s": round(float(begin - start), 1),
                **{k: summary.get(k) for k in ("count", "p50", "p99", "max")},
            }
        )
    acked = np.frombuffer(produced.ack_times, dtype=float)
    result: dict[str, Any] = {
        "events_published": count,
        "publish_seconds": round(last - start, 3),
        "published_per_second": round((count - 1) / (last - start), 1) if count > 1 else 0.0,
        "max_behind_schedule_ms": round(produced.max_behind_schedule * 1000, 2),
        "producer_errors": produced.errors,
        "producer_cpu_percent": round(100 * produced.cpu_seconds / duration, 1),
        "delivered": int(delivered.sum()),
        "not_delivered": int(count - delivered.sum()),
        "latency_ms": summarize_ms(latency[delivered]),
        "latency_by_window": windows,
        "watch_messages": watched.messages,
        "watch_messages_per_event": round(watched.messages / count, 3) if count else None,
        # Streams that ended with an error during the measurement (and were reopened).
        "watch_stream_errors": watched.errors,
        "watcher_cpu_seconds": round(watched.cpu_seconds, 2),
        "breakdown_ms": {
            "publish_to_broker_ack": summarize_ms((acked - published)[~np.isnan(acked)]),
        },
    }
    if tapped is not None:
        tap_index = ReachIndex(tapped)
        announced = np.array(
            [
                tap_index.first_reached(slot, on_hand)
                for slot, on_hand in zip(produced.slots, produced.expected_on_hands, strict=True)
            ]
        )
        both = delivered & ~np.isnan(announced)
        result["breakdown_ms"]["publish_to_redis_change"] = summarize_ms(
            (announced - published)[~np.isnan(announced)]
        )
        result["breakdown_ms"]["redis_change_to_watch_client"] = summarize_ms(
            (received - announced)[both]
        )
        result["redis_changes"] = tapped.messages
        result["redis_changes_per_event"] = round(tapped.messages / count, 3) if count else None
        result["redis_tap_cpu_seconds"] = round(tapped.cpu_seconds, 2)
    return result


def target_met(summary: Mapping[str, Any], target_ms: float) -> bool:
    return bool(summary.get("count")) and float(summary["p99"]) <= target_ms


def latency_line(summary: Mapping[str, Any]) -> str:
    if not summary.get("count"):
        return "no samples"
    return (
        f"{summary['count']} samples, p50 {summary['p50']:.2f} ms, p99 {summary['p99']:.2f} ms, "
        f"max {summary['max']:.2f} ms"
    )


def _ms(summary: Mapping[str, Any], key: str) -> str:
    value = summary.get(key)
    return f"{value:9.2f}" if isinstance(value, int | float) else f"{'-':>9}"


def _verdict(met: bool) -> str:
    return "MET" if met else "MISSED"


def _cpu_lines(usage: Mapping[str, Any], cores: int) -> list[str]:
    cpu, waited = usage["cpu_percent"], usage["runqueue_wait_percent"]
    parts = [
        f"{name.replace('_', ' ')} {value:.0f} ({waited[name]:.0f})"
        for name, value in cpu.items()
        if not math.isnan(value)
    ]
    lines, line = [], "  "
    for part in parts:
        if len(line) + len(part) > 96:
            lines.append(line)
            line = "  "
        line += " " + part + " "
    lines.append(line)
    ours = sum(value for value in cpu.values() if not math.isnan(value))
    lines.append(
        f"   machine busy {usage['machine_busy_percent']:.0f} of {100 * cores}, of which"
        f" {max(0.0, usage['machine_busy_percent'] - ours):.0f} not by the processes above"
    )
    return [text.rstrip() for text in lines]


def render_table(report: Mapping[str, Any]) -> str:
    p = report["parameters"]
    machine = report["machine"]
    seed = report["seed"]
    watch = report["watch"]
    targets = report["targets"]
    lines = [
        f"gRPC API benchmark ({report['started_at']}): {machine['cpu_count']} CPUs, "
        f"Python {machine['python']}",
        f"catalogue {p['skus']:,} SKUs x {p['locations']} locations, {p['partitions']} partitions;"
        f" {seed['events']:,} ERP balances served {seed['served_after_seconds']:.1f} s after the"
        f" first was published",
        "",
        f"1. Watch delivery, publish to Kafka -> WatchAvailability client ({p['watches']} watches"
        f" x {report['watches_open']['skus_per_watch']} SKUs, initial figures in"
        f" {report['watches_open']['open_seconds']:.2f} s)",
        f"   {watch['events_published']:,} pos.sale events in {watch['publish_seconds']:.1f} s ="
        f" {watch['published_per_second']:,.1f} ev/s (target {p['rate']:,.0f}; at most"
        f" {watch['max_behind_schedule_ms']:.1f} ms behind schedule)",
        f"   {'':34}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}  (ms)",
    ]
    rows = [("publish -> watch client", watch["latency_ms"])]
    breakdown = watch["breakdown_ms"]
    rows.append(("  publish -> broker ack", breakdown["publish_to_broker_ack"]))
    if "publish_to_redis_change" in breakdown:
        rows.append(("  publish -> change in Redis", breakdown["publish_to_redis_change"]))
        rows.append(
            ("  change in Redis -> watch client", breakdown["redis_change_to_watch_client"])
        )
    for label, summary in rows:
        lines.append(
            f"   {label:34}{_ms(summary, 'p50')}{_ms(summary, 'p95')}{_ms(summary, 'p99')}"
            f"{_ms(summary, 'max')}"
        )
    lines.append(
        f"   target p99 <= {WATCH_P99_TARGET_MS:.0f} ms: {_verdict(targets['watch_p99_met'])};"
        f" delivered {watch['delivered']:,} of {watch['events_published']:,}"
        f" ({watch['not_delivered']} not delivered)"
    )
    coalescing = (
        f"   watch messages {watch['watch_messages']:,} ({watch['watch_messages_per_event']} per"
        " event)"
    )
    if "redis_changes" in watch:
        coalescing += (
            f"; record changes announced in Redis {watch['redis_changes']:,}"
            f" ({watch['redis_changes_per_event']} per event)"
        )
    lines.append(coalescing)
    open_errors = report["watches_open"]["open_errors"]
    for label, errors in (
        ("watch opens refused, then retried", open_errors),
        ("watch streams ended with an error, then reopened", watch["watch_stream_errors"]),
    ):
        for reason, count in errors.items():
            lines.append(f"   {label}: {count} x {reason}")
    by_window = " ".join(
        f"{w['p99']:.0f}" if w.get("p99") is not None else "-" for w in watch["latency_by_window"]
    )
    lines.append(f"   p99 per {p['window']:.0f}-s window (ms): {by_window}")
    worker = watch["worker"]
    lines.append(
        f"   worker folded {worker['folded_while_publishing']:,} sales while they were published"
        f" ({worker['folded_per_second_while_publishing']:,.0f}/s), the other"
        f" {worker['sales_folded'] - worker['folded_while_publishing']:,} in the"
        f" {worker['seconds_to_fold_the_rest_after_publishing']:.1f} s after"
    )
    lines += [
        "",
        f"2. GetAvailability, random SKU, {p['get_callers']} callers at {p['get_rate']:,.0f}"
        " requests/s",
        f"   {'':32}{'requests':>9}{'rate/s':>9}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}"
        f"  errors  p99 <= {GET_P99_TARGET_MS:.0f} ms",
    ]
    for label, key, met in (
        ("(a) no watches, no events", "get_idle", targets["get_idle_p99_met"]),
        (f"(b) {p['watches']} watches + {p['rate']:,.0f} ev/s", "get_under_load",
         targets["get_under_load_p99_met"]),
    ):  # fmt: skip
        get = report[key]
        summary = get["latency_ms"]
        errors = sum(get["errors"].values())
        lines.append(
            f"   {label:32}{get['requests']:>9,}{get['achieved_rate']:>9.1f}{_ms(summary, 'p50')}"
            f"{_ms(summary, 'p95')}{_ms(summary, 'p99')}{_ms(summary, 'max')}"
            f"  {errors:>6}  {_verdict(met)}"
        )
    lines += [
        "",
        "CPU, % of one core (in brackets: runnable but waiting for a CPU, summed over threads)",
        "  in phase (a):",
    ]
    lines += _cpu_lines(report["get_idle"]["cpu"], machine["cpu_count"] or 1)
    lines.append("  in phase (b):")
    lines += _cpu_lines(report["cpu_during_stream"], machine["cpu_count"] or 1)
    catch = report.get("catch_up")
    if catch is not None:
        lines += [
            "",
            f"3. Worker fold capacity: {catch['events']:,} sales published at once (in"
            f" {catch['publish_seconds']:.1f} s), folded after"
            f" {catch['seconds_until_folded']:.1f} s"
            f" = {catch['folded_per_second']:,.0f} events/s (no watches, no other load)",
        ]
        lines += _cpu_lines(catch["cpu"], machine["cpu_count"] or 1)
    settings = report["worker_settings"]
    lines += [
        "",
        "worker: " + ", ".join(f"{name} {value}" for name, value in settings.items()),
    ]
    return "\n".join(lines)
