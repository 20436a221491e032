"""The leaky bucket, idempotency keys and fault rules of the stand-in (pure parts)."""

from __future__ import annotations

import pytest

from dev.shopify_admin.bucket import PLANS, LeakyBucket
from dev.shopify_admin.faults import Faults, FaultSpecError
from dev.shopify_admin.idempotency import (
    CONCURRENT,
    MISMATCH,
    PREVIOUS_FAILED,
    Begun,
    IdempotencyKeys,
    Replay,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_drains_refuses_and_refills_at_the_restore_rate() -> None:
    clock = Clock()
    bucket = LeakyBucket(100, 10, clock)
    assert bucket.try_take(60) and bucket.try_take(40)
    assert not bucket.try_take(1)  # empty: refused, nothing taken
    clock.now += 2.5
    assert bucket.status() == {
        "maximumAvailable": 100.0,
        "currentlyAvailable": 25,
        "restoreRate": 10.0,
    }
    assert not bucket.try_take(26)
    assert bucket.try_take(25)
    clock.now += 1000
    assert bucket.available == 100  # never above the maximum


def test_refund_of_the_unused_cost_is_capped() -> None:
    clock = Clock()
    bucket = LeakyBucket(100, 10, clock)
    bucket.try_take(80)
    bucket.give_back(75)
    assert bucket.available == 95
    bucket.give_back(50)
    assert bucket.available == 100


def test_standard_plan_is_100_points_a_second() -> None:
    assert PLANS["standard"] == (2000.0, 100.0)
    assert PLANS["plus"][1] == 1000.0


def test_idempotency_keys() -> None:
    keys = IdempotencyKeys()
    assert isinstance(keys.begin("k", "input-1"), Begun)
    assert keys.begin("k", "input-1") is CONCURRENT
    assert keys.begin("k", "input-2") is MISMATCH
    keys.finish("k", {"result": 1})
    assert keys.begin("k", "input-1") == Replay({"result": 1})
    assert isinstance(keys.begin("f", "x"), Begun)
    keys.fail("f")
    assert keys.begin("f", "x") is PREVIOUS_FAILED


def test_faults_next_n_and_filters() -> None:
    faults = Faults()
    faults.add({"kind": "status", "status": 503, "count": 2, "operation": "mutation"})
    assert faults.take(False, ("locations",)) is None
    first = faults.take(True, ("inventorySetQuantities",))
    assert first is not None and first.status == 503
    assert faults.take(True, ("inventorySetQuantities",)) is not None
    assert faults.take(True, ("inventorySetQuantities",)) is None


def test_faults_with_a_probability_repeat_with_the_seed() -> None:
    def run() -> list[bool]:
        faults = Faults(seed=7)
        faults.add({"kind": "drop", "probability": 0.3})
        return [faults.take(False, ()) is not None for _ in range(200)]

    hits = run()
    assert hits == run()
    assert 30 < sum(hits) < 90


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "boom"},
        {"kind": "status", "status": 418},
        {"kind": "slow"},
        {"kind": "drop", "probability": 2},
    ],
)
def test_bad_fault_specs_are_refused(spec: dict[str, object]) -> None:
    with pytest.raises(FaultSpecError):
        Faults().add(spec)
