"""The benchmark workload: valid, deterministic, and the mix it promises."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from availability.events import parse_event
from availability.state import SkuState, fold
from loadtests.workload import CATALOGUE_ON_HAND, MIX, catalogue, event_mix


def test_catalogue_is_one_balance_per_sku_and_location() -> None:
    events = list(catalogue("r", 3, 4))
    assert len(events) == 12
    assert {(e["sku"], e["location_id"]) for e in events} == {
        (f"SKU-{i:06d}", f"LOC-{j:03d}") for i in range(3) for j in range(4)
    }
    assert {e["on_hand"] for e in events} == {CATALOGUE_ON_HAND}
    assert len({e["event_id"] for e in events}) == 12


def test_mix_is_deterministic_and_every_event_is_valid() -> None:
    # One start for all three: the default is "a day ago", which moves between calls.
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    first = list(event_mix("r", 50, 5, 5_000, seed=3, start=start))
    assert first == list(event_mix("r", 50, 5, 5_000, seed=3, start=start))
    assert first != list(event_mix("r", 50, 5, 5_000, seed=4, start=start))
    assert len({e["event_id"] for e in first}) == len(first) == 5_000
    for event in first:
        parsed = parse_event(orjson.dumps(event))
        assert parsed.sku == event["sku"]


def test_mix_has_the_documented_proportions() -> None:
    events = list(event_mix("r", 200, 10, 20_000))
    kinds = Counter(e["type"] for e in events)
    share = {kind: weight / 100 for kind, weight in MIX}
    assert kinds["pos.sale"] / len(events) == pytest.approx(share["sale"], abs=0.02)
    assert kinds["pos.return"] / len(events) == pytest.approx(share["return"], abs=0.01)
    closes = kinds["reservation.released"] + kinds["reservation.fulfilled"]
    assert (kinds["reservation.created"] + closes) / len(events) == pytest.approx(
        share["reserve"] + share["close"], abs=0.02
    )
    transfers = kinds["transfer.shipped"] + kinds["transfer.received"]
    assert transfers / len(events) == pytest.approx(share["transfer"], abs=0.01)
    assert kinds["erp.balance"] / len(events) == pytest.approx(share["balance"], abs=0.01)


def test_closes_and_receipts_refer_to_earlier_events_of_the_same_sku() -> None:
    created: dict[str, str] = {}
    shipped: dict[str, tuple[str, int]] = {}
    for event in event_mix("r", 20, 4, 5_000):
        if event["type"] == "reservation.created":
            created[event["reservation_id"]] = event["sku"]
        elif event["type"] in ("reservation.released", "reservation.fulfilled"):
            assert created.pop(event["reservation_id"]) == event["sku"]
        elif event["type"] == "transfer.shipped":
            shipped[event["transfer_id"]] = (event["sku"], event["quantity"])
        elif event["type"] == "transfer.received":
            assert shipped.pop(event["transfer_id"]) == (event["sku"], event["quantity"])


def test_stock_stays_positive_so_no_figure_is_clamped() -> None:
    # The catalogue's stock is large enough that the mix never sells a location out:
    # every event changes a figure, which is what the fold benchmark means to measure.
    states: dict[str, SkuState] = {}
    for event in [*catalogue("r", 20, 4), *event_mix("r", 20, 4, 5_000)]:
        parsed = parse_event(orjson.dumps(event))
        state = states.setdefault(parsed.sku, SkuState(parsed.sku))
        fold(state, parsed)
    for state in states.values():
        assert all(state.on_hand(location) > 0 for location in state.locations())


def test_zipf_popularity_follows_the_80_20_rule_and_uniform_does_not() -> None:
    def top_fifth_share(popularity: str) -> float:
        events = list(event_mix("r", 1_000, 5, 50_000, popularity=popularity))
        counts = sorted(Counter(e["sku"] for e in events).values(), reverse=True)
        return sum(counts[:200]) / len(events)

    assert 0.74 < top_fifth_share("zipf") < 0.84  # H(200) / H(1000) = 0.785
    assert top_fifth_share("uniform") < 0.3


def test_unknown_popularity_is_refused() -> None:
    with pytest.raises(ValueError, match="popularity"):
        next(event_mix("r", 10, 5, 1, popularity="pareto"))


def test_the_state_benchmark_makes_valid_lines_and_measures_growth() -> None:
    import random
    from itertools import islice

    from availability.events import event_from_dict
    from loadtests.bench_state import growth, reservation_events

    events = list(islice(reservation_events("run", 50, random.Random(1)), 300))
    kinds = {event_from_dict(e).__class__.__name__ for e in events}
    assert kinds == {
        "ReservationCreated", "ReservationReleased", "ReservationFulfilled", "ErpBalance",
    }  # fmt: skip
    lines = {e["reservation_id"] for e in events if "reservation_id" in e}
    assert len(lines) > 150  # a new line each time
    run = {"samples": [{"seconds": s, "rss_mib": 100 + s / 10} for s in (0, 30, 60, 90)]}
    assert growth(run, warm=30) == 6.0
    assert growth(run, warm=90) is None


def test_the_state_benchmark_balances_every_sku_once_a_cycle() -> None:
    """Each SKU's baseline settles within one cycle of the balances, so the state's
    steady size is reached then, not after a random wait (BENCHMARKS "State memory")."""
    import random
    from itertools import islice

    from loadtests.bench_state import (
        BALANCE_EVERY,
        EVENTS_PER_LINE,
        StateParams,
        balance_cycle,
        reservation_events,
        warm_seconds,
    )

    skus = 40
    events = list(islice(reservation_events("run", skus, random.Random(3)), 2000))
    balances = [e["sku"] for e in events if e["type"] == "erp.balance"]
    cycle = balances[:skus]
    assert Counter(cycle) == Counter({f"RS-{i:05d}": 1 for i in range(skus)})
    assert balances[skus : 2 * skus] == cycle  # and again in the same order
    lines = len({e["reservation_id"] for e in events if "reservation_id" in e})
    assert len(balances) in (lines // BALANCE_EVERY, lines // BALANCE_EVERY + 1)
    assert abs(len(events) / lines - EVENTS_PER_LINE) < 0.05

    # 10,000 SKUs at 1,000 events/s: a balance for each every 180 s
    assert balance_cycle(10_000, 1000.0) == 180.0
    params = StateParams(
        seconds=420, rate=1000.0, horizon=30.0, skus=10_000, partitions=8,
        redis_url="redis://unused", worker_batch_bytes=16384, seed=7,
    )  # fmt: skip
    assert warm_seconds(params) == 210  # the cycle, the settle window, two samples
    assert warm_seconds(replace(params, horizon=600.0)) == 620  # a longer horizon rules
