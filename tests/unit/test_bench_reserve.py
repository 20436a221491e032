"""The reserve benchmark's requests are valid reserve requests, each with an id of its
own (what the service parses; a 409 or 400 would fail the run)."""

from __future__ import annotations

import math
import re

import orjson

from loadtests.bench_reserve import from_bench, parse_args, render
from loadtests.http_load import _WRK_RESERVE, reserve_body
from loadtests.server_latency import summarize_buckets
from services.http.routes_reservations import parse_reserve_request


def test_the_open_loop_body_is_a_one_line_cart_without_location() -> None:
    parsed = parse_reserve_request(orjson.loads(reserve_body("run-o-7", "SKU-000042")))
    assert parsed.reservation_id == "run-o-7"
    assert parsed.channel == "online"
    assert [(x.sku, x.quantity, x.location_id) for x in parsed.lines] == [("SKU-000042", 1, None)]


def test_the_wrk_script_sends_a_new_reservation_id_and_a_random_sku_per_request() -> None:
    script = _WRK_RESERVE % {"seed": 1, "skus": 100, "batch": 0, "prefix": "abc-c0"}
    template = re.search(r"string\.format\(\s*'(.*?)'\s*\.\.\s*'(.*?)'", script, re.S)
    assert template is not None
    lua_format = template.group(1) + template.group(2)
    ids = set()
    for n, sku in ((1, 5), (2, 99)):
        body = lua_format.replace("%d", str(n), 1).replace("%06d", f"{sku:06d}", 1)
        parsed = parse_reserve_request(orjson.loads(body))
        ids.add(parsed.reservation_id)
        assert parsed.lines[0].sku == f"SKU-{sku:06d}"
        assert parsed.lines[0].location_id is None
    assert ids == {"abc-c0-1", "abc-c0-2"}
    assert "math.random(0, skus - 1)" in script


def test_quick_runs_are_short_and_make_bench_passes_its_workload_on() -> None:
    params, _, _ = parse_args(["--quick"])
    assert (params.skus, params.rounds, params.seconds) == (1_000, 1, 3.0)

    class BenchParams:
        skus, locations, read_connections, read_seconds, read_rounds = 10_000, 20, 16, 10.0, 2
        redis_url, partitions, seed = "redis://127.0.0.1:6379/0", 8, 7

    section = from_bench(BenchParams())
    assert (section.skus, section.connections, section.open_seconds) == (10_000, 16, 20.0)


def test_the_table_says_whether_the_p99_target_is_met() -> None:
    run = {"requests_per_second": 900, "p50_ms": 10.0, "p99_ms": 20.0}
    latency = {"p50": 3.0, "p99": 25.0, "max": 40.0}
    report = {
        "skus": 10_000,
        "locations": 20,
        "connections": 16,
        "closed_loop": {"reserve": run, "single_read": {**run, "requests_per_second": 4000}},
        "open_loop_at_half": {
            "target_requests_per_second": 450.0,
            "requests_per_second": 449.0,
            "latency_ms": latency,
            "service_time_ms": latency,
            "max_behind_schedule_ms": 1.0,
            "in_service": summarize_buckets(
                {0.01: 0, 0.025: 0, 0.05: 0, math.inf: 0},
                {0.01: 900, 0.025: 985, 0.05: 1000, math.inf: 1000},
            )
            | {
                "phases": {
                    "publish": summarize_buckets({}, {0.01: 90, 10.0: 95, math.inf: 100}),
                    "claim": summarize_buckets({}, {0.01: 100, math.inf: 100}),
                }
            },
        },
        "p99_target_ms": 20.0,
        "p99_met": False,
    }
    text = render(report)
    assert "reserve 900 req/s" in text and "single read             4000 req/s" in text
    assert "p99 25.0 ms" in text and "MISSED" in text
    assert "p99 at most 50 ms; 90% within 10 ms, 98.5% within 25 ms, 100% within 50 ms" in text
    assert "its steps, p99 at most: claim 10 ms, publish beyond the last bucket" in text


def test_the_service_side_p99_is_the_bucket_that_holds_it() -> None:
    before = {0.001: 10, 0.01: 50, 0.025: 60, math.inf: 60}
    after = {0.001: 10, 0.01: 1040, 0.025: 1060, math.inf: 1060}
    # 1,000 requests between the readings, 990 of them within 10 ms
    summary = summarize_buckets(before, after)
    assert summary["requests"] == 1000
    assert summary["p99_at_most_ms"] == 10
    assert summary["within_ms"] == {"1": 0.0, "10": 99.0, "25": 100.0}
    slow = summarize_buckets(before, {**after, 0.025: 1060, math.inf: 1080})
    assert slow["p99_at_most_ms"] is None  # 2% beyond 25 ms, the last finite bound
    assert summarize_buckets(after, after)["requests"] == 0
