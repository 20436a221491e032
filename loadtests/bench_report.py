"""The table ``python -m loadtests.bench`` prints (and the markdown summary it writes
beside its JSON): each section's figures against its target."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from loadtests import bench_push, bench_reserve
from loadtests.bench_params import (
    FOLD_RATIO_TARGET,
    FRESHNESS_P99_TARGET_MS,
    FRESHNESS_TARGET_RATE,
    READ_P99_TARGET_MS,
    READ_RATIO_TARGET,
)
from loadtests.bench_state import state_lines


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


READ_HEADER: Final[str] = (
    "                          service req/s  p50 ms  p99 ms | baseline req/s  p99 ms | ratio"
)


def _read_lines(reads: Mapping[str, Any]) -> list[str]:
    lines = [
        "",
        f"HTTP reads ({reads['single']['connections']} connections, one uvicorn worker each)",
        READ_HEADER,
    ]
    for kind in ("single", "batch"):
        pair = reads[kind]
        service, baseline = pair["service"], pair["baseline"]
        label = "single SKU" if kind == "single" else "batch of 100"
        lines.append(
            f"  {label:<22} {service['requests_per_second']:>13}  {service['p50_ms']:>6.2f}"
            f"  {service['p99_ms']:>6.2f} | {baseline['requests_per_second']:>14}"
            f"  {baseline['p99_ms']:>6.2f} | {pair['ratio']:.0%}"
        )
    ratio = reads["single"]["ratio"]
    half = reads["single_half_load"]
    lines += [
        f"  single read / baseline: {ratio:.0%} (target >= {READ_RATIO_TARGET:.0%}:"
        f" {_verdict(ratio >= READ_RATIO_TARGET)})",
        f"  single read at half load: {half['requests_per_second']} req/s, p99"
        f" {half['p99_ms']:.2f} ms (target <= {READ_P99_TARGET_MS:g} ms:"
        f" {_verdict(half['p99_ms'] <= READ_P99_TARGET_MS)})",
    ]
    grpc_get = reads.get("grpc_get")
    if grpc_get:
        service, baseline = grpc_get["service"], grpc_get["baseline"]
        lines += [
            "",
            f"gRPC reads ({grpc_get['connections']} connections, h2load, one SKU)",
            READ_HEADER,
            f"  {'GetAvailability':<22} {service['requests_per_second']:>13}"
            f"  {service['p50_ms']:>6.2f}  {service['p99_ms']:>6.2f}"
            f" | {baseline['requests_per_second']:>14}  {baseline['p99_ms']:>6.2f}"
            f" | {grpc_get['ratio']:.0%}",
        ]
    return lines


def _freshness_lines(freshness: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["", "freshness (publish -> visible over HTTP)   probes  p50 ms   p99 ms  never seen"]
    for measured in freshness:
        latency = measured["latency_ms"]
        p50 = latency.get("p50", math.nan)
        p99 = latency.get("p99", math.nan)
        label = f"at {measured['rate']} events/s"
        if "fraction_of_backlog_rate" in measured:
            state = "kept up" if measured["sustained"] else "fell behind"
            label += f" ({measured['fraction_of_backlog_rate']:.0%}, {state})"
        lines.append(
            f"  {label:<40} {measured['probed_events']:>6} {p50:>7.1f} {p99:>8.1f}"
            f"  {measured['never_seen']:>10}"
        )
    at_target = next((m for m in freshness if m["rate"] == round(FRESHNESS_TARGET_RATE)), None)
    if at_target is not None:
        p99 = at_target["latency_ms"].get("p99", math.inf)
        met = p99 <= FRESHNESS_P99_TARGET_MS and at_target["never_seen"] == 0
        lines.append(
            f"  p99 at {FRESHNESS_TARGET_RATE:.0f} events/s: {p99:.1f} ms"
            f" (target <= {FRESHNESS_P99_TARGET_MS:g} ms: {_verdict(met)})"
        )
    return lines


def render_table(report: Mapping[str, Any]) -> str:
    machine, params = report["machine"], report["parameters"]
    lines = [
        f"machine: {machine['cpu_count']} cores, {machine['memory_gib']} GiB; workload"
        f" {params['skus']} SKUs x {params['locations']} locations"
        f" + {params['mix_events']} mixed events ({params['popularity']} SKU popularity)",
    ]
    if "reads" in report:
        lines += _read_lines(report["reads"])
    if "reserve" in report:
        lines.append(bench_reserve.render(report["reserve"]))
    if "fold" in report:
        lines += [
            "",
            "fold (backlog)         events/s  seconds  events/batch  cpu% per process",
        ]
        for run in report["fold"]["runs"]:
            cpu = ", ".join(
                f"{name} {value:.0f}" for name, value in run["cpu"]["cpu_percent"].items()
            )
            label = f"{run['kind']} x{run['processes']}"
            per_batch = "-" if run["events_per_batch"] is None else f"{run['events_per_batch']:.0f}"
            rate, seconds = run["events_per_second"], run["seconds"]
            lines.append(f"  {label:<20} {rate:>8}  {seconds:>7.1f}  {per_batch:>12}  {cpu}")
        for processes, ratio in report["fold"]["ratios"].items():
            target = f"target >= {FOLD_RATIO_TARGET:.0%}"
            lines.append(
                f"  worker / floor, {processes} process(es): {ratio:.0%}"
                f" ({target}: {_verdict(ratio >= FOLD_RATIO_TARGET)})"
            )
    if report.get("freshness"):
        lines += _freshness_lines(report["freshness"])
    if report.get("state"):
        lines += state_lines(report["state"])
    memory = report.get("memory") or {}
    if memory:
        per_location = memory["redis_bytes_per_sku_location"]
        rss = memory["worker_rss_mib_per_100k_sku_locations"]
        lines += [
            "",
            "memory",
            f"  Redis bytes per SKU-location             {per_location}",
            f"  worker RSS MiB per 100,000 SKU-locations {rss}",
        ]
    if "push" in report:
        lines.append(bench_push.render(report["push"]))
    return "\n".join(lines)


def render_markdown(report: Mapping[str, Any]) -> str:
    return "# Benchmark summary\n\n```\n" + render_table(report) + "\n```\n"
