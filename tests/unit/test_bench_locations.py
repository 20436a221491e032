"""The store-count benchmark's arithmetic: per-event figures net of the idle worker,
medians over rounds, and the verdict of the most locations against the fewest."""

from __future__ import annotations

from typing import Any

from loadtests.bench_locations import parse_args, per_event, render_table, summarize


def interval(seconds: float, cpu: float, redis_in: int, writes: int) -> dict[str, float]:
    return {
        "seconds": seconds,
        "worker_cpu_seconds": cpu,
        "redis_input_bytes": redis_in,
        "redis_output_bytes": redis_in / 4,
        "folded": writes,
        "batches": writes / 2,
        "serving_writes": writes,
        "feed_published": writes,
    }


def test_per_event_figures_leave_out_what_the_idle_worker_spends_meanwhile() -> None:
    idle = interval(5.0, 0.25, 10_000, 0)  # 0.05 s and 2,000 bytes a second
    sales = interval(20.0, 2.0, 1_040_000, 1_000)
    figures = per_event(sales, idle, 1_000)
    assert figures["worker_cpu_us"] == 1_000.0  # (2.0 - 20 * 0.05) s / 1,000 events
    assert figures["worker_cpu_us_gross"] == 2_000.0
    assert figures["redis_input_bytes"] == 1_000  # (1,040,000 - 40,000) / 1,000
    assert figures["serving_writes"] == 1.0
    assert figures["fold_batches"] == 0.5


def run(locations: int, round_: int, cpu_us: float, redis_in: float) -> dict[str, Any]:
    figures = {
        "worker_cpu_us": cpu_us,
        "redis_input_bytes": redis_in,
        "redis_output_bytes": redis_in / 4,
        "feed_bytes": redis_in,
        "channel_bytes": redis_in / 5,
        "serving_writes": 1.0,
        "fold_batches": 0.4,
    }
    return {
        "locations": locations,
        "round": round_,
        "events": 100,
        "record_memory_bytes": 1000,
        "per_event": figures,
    }


def test_the_most_locations_are_judged_against_the_fewest_on_the_medians() -> None:
    runs = [
        run(20, 0, 1_000, 3_000),
        run(1000, 0, 1_900, 5_000),
        run(20, 1, 1_200, 3_000),
        run(1000, 1, 2_100, 8_000),
    ]
    summary = summarize(runs, [20, 1000])
    assert summary["per_event"]["20"]["worker_cpu_us"] == 1_100
    assert summary["ratios"]["worker_cpu_us"] == {"ratio": 1.82, "target": 2.0, "met": True}
    assert summary["ratios"]["redis_input_bytes"] == {"ratio": 2.17, "target": 2.0, "met": False}
    assert summary["ratios"]["feed_bytes"]["met"] is None  # reported, not targeted
    args = parse_args(["--quick", "--locations", "20,1000"])
    report = {
        "parameters": {
            "locations": args.locations,
            "skus": args.skus,
            "rate": args.rate,
            "seconds": args.seconds,
            "rounds": 2,
        },
        "runs": runs,
        **summary,
    }
    table = render_table(report)
    assert "worker_cpu_us" in table and "met" in table and "missed" in table
