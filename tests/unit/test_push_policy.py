"""Push policies: validation, scopes, the most specific wins; the push's arithmetic."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from availability.push_decision import (
    BucketEstimate,
    Hold,
    after_stale_compare,
    backoff,
    capped,
    due_at,
)
from availability.push_policy import (
    DEFAULT_MAX_STALENESS_S,
    PUSH_EVERY_CHANGE,
    InvalidPushPolicy,
    PushPolicy,
    PushPolicyBook,
    parse_push_policy,
)

# --- validation ----------------------------------------------------------------


def test_absent_fields_are_null() -> None:
    policy = parse_push_policy("p1", {"low_stock": 5})
    assert policy == PushPolicy("p1", low_stock=5)
    assert policy.to_data() == {
        "policy_id": "p1",
        "sku": None,
        "location_id": None,
        "low_stock": 5,
        "min_delta": None,
        "min_delta_pct": None,
        "max_staleness_s": None,
    }
    assert policy.staleness == DEFAULT_MAX_STALENESS_S


def test_a_full_policy() -> None:
    body = {
        "policy_id": "p.1",
        "sku": "SKU-1",
        "location_id": "STORE-001",
        "low_stock": 3,
        "min_delta": 10,
        "min_delta_pct": 5,
        "max_staleness_s": 60,
    }
    policy = parse_push_policy("p.1", body)
    assert policy.scope == ("SKU-1", "STORE-001")
    assert policy.to_data() == {**body, "min_delta_pct": 5.0, "max_staleness_s": 60.0}


@pytest.mark.parametrize(
    ("policy_id", "body", "expected"),
    [
        ("p1", {"low_stock": -1}, "low_stock must be null or an integer"),
        ("p1", {"low_stock": True}, "low_stock must be null or an integer"),
        ("p1", {"min_delta": 2.5}, "min_delta must be null or an integer"),
        ("p1", {"min_delta_pct": 101}, "min_delta_pct must be null or a number from 0 to 100"),
        ("p1", {"min_delta_pct": "5"}, "min_delta_pct must be null"),
        ("p1", {"max_staleness_s": 3601}, "max_staleness_s must be null"),
        ("p1", {"max_staleness_s": -1}, "max_staleness_s must be null"),
        ("p1", {"max_staleness_s": float("nan")}, "max_staleness_s must be null"),
        ("p1", {"low_stok": 1}, "unknown field(s): low_stok"),
        ("p1", {"policy_id": "p2"}, "differs from the path"),
        ("p 1", {}, "policy_id must be"),
        ("p1", {"sku": "bad sku"}, "sku must be null"),
        ("p1", {"location_id": ""}, "location_id must be null"),
        ("p1", [], "must be a JSON object"),
    ],
)
def test_invalid_policies_name_the_field(policy_id: str, body: object, expected: str) -> None:
    with pytest.raises(InvalidPushPolicy) as caught:
        parse_push_policy(policy_id, body)
    assert expected in str(caught.value)


def test_every_problem_is_listed() -> None:
    with pytest.raises(InvalidPushPolicy) as caught:
        parse_push_policy("p1", {"low_stock": -1, "min_delta": "x", "x": 1})
    assert len(caught.value.problems) == 3


# --- the book --------------------------------------------------------------------


def test_one_policy_per_scope_and_the_most_specific_wins_whole() -> None:
    default = PushPolicy("default", min_delta=10, max_staleness_s=60)
    at_store = PushPolicy("store", location_id="S1", min_delta=5)
    for_sku = PushPolicy("sku", sku="A", low_stock=3)
    exact = PushPolicy("exact", sku="A", location_id="S1", min_delta=0)
    book = PushPolicyBook([default, at_store, for_sku])
    assert book.resolve("A", "S1") is for_sku  # (sku, any) beats (any, loc)
    assert book.resolve("B", "S1") is at_store
    assert book.resolve("B", "S2") is default
    assert book.put(exact)
    assert book.resolve("A", "S1") is exact
    assert not book.put(PushPolicy("other", sku="A", location_id="S1"))
    assert book.conflict(PushPolicy("other", sku="A", location_id="S1")) is exact
    assert book.delete("exact") is exact and book.resolve("A", "S1") is for_sku
    assert PushPolicyBook().resolve("A", "S1") is PUSH_EVERY_CHANGE
    # Moving a policy to another scope frees the old one.
    assert book.put(PushPolicy("sku", sku="B"))
    assert book.resolve("A", "S1") is at_store
    assert [p.policy_id for p in book.all()] == ["default", "sku", "store"]


# --- when to push -------------------------------------------------------------------

figures = st.integers(min_value=0, max_value=10_000)
policies = st.builds(
    PushPolicy,
    policy_id=st.just("p"),
    low_stock=st.none() | st.integers(0, 100),
    min_delta=st.none() | st.integers(0, 100),
    min_delta_pct=st.none() | st.floats(0, 100),
    max_staleness_s=st.none() | st.floats(0, 3600),
)


def test_the_default_pushes_every_change_at_once() -> None:
    for last, figure in ((5, 6), (100, 99), (1, 0), (0, 1)):
        assert due_at(PUSH_EVERY_CHANGE, figure, last, 7.0) == 7.0
    assert due_at(PUSH_EVERY_CHANGE, 5, 5, 7.0) is None


@given(policies, figures, figures, st.floats(0, 1e9))
def test_due_is_never_later_than_the_staleness_bound(
    policy: PushPolicy, figure: int, last: int, since: float
) -> None:
    due = due_at(policy, figure, last, since)
    if figure == last:
        assert due is None
    else:
        assert due is not None and since <= due <= since + policy.staleness


@given(policies, figures, figures, st.floats(0, 1e9))
def test_crossings_of_zero_and_low_stock_are_at_once(
    policy: PushPolicy, figure: int, last: int, since: float
) -> None:
    if figure == last:
        return
    at_once = due_at(policy, figure, last, since) == since
    if figure == 0 or last == 0:
        assert at_once
    if policy.low_stock is not None and min(figure, last) <= policy.low_stock:
        assert at_once


def test_deltas_wait_until_both_thresholds_are_met() -> None:
    policy = PushPolicy("p", min_delta=10, min_delta_pct=5, max_staleness_s=60)
    assert due_at(policy, 1009, 1000, 0.0) == 60.0  # 9 units
    assert due_at(policy, 990, 1000, 0.0) == 60.0  # 10 units, 1%
    assert due_at(policy, 950, 1000, 0.0) == 0.0  # 50 units, 5%
    assert due_at(policy, 30, 20, 0.0) == 0.0  # 10 units, 50%
    low_only = PushPolicy("p", low_stock=5, max_staleness_s=30)
    assert due_at(low_only, 50, 60, 0.0) == 30.0
    assert due_at(low_only, 5, 60, 0.0) == 0.0
    assert due_at(low_only, 60, 5, 0.0) == 0.0  # the shop shows a low figure
    assert due_at(low_only, 50, None, 3.0) == 3.0  # never pushed


# --- the stale-compare rule ------------------------------------------------------------


@given(figures, figures)
def test_a_stale_compare_never_raises_the_shop(ours: int, shop_now: int) -> None:
    quantity = after_stale_compare(ours, shop_now)
    assert quantity <= shop_now and quantity <= ours
    assert quantity == ours or quantity == shop_now  # lowering to ours is always allowed


@given(figures, figures, st.floats(0, 100), st.floats(0, 100))
def test_a_hold_caps_raises_until_it_ends(
    ours: int, ceiling: int, until: float, now: float
) -> None:
    quantity = capped(ours, Hold(ceiling, until), now)
    if now < until:
        assert quantity == min(ours, ceiling)
    else:
        assert quantity == ours
    assert capped(ours, None, now) == ours


# --- pacing ------------------------------------------------------------------------------


def test_the_bucket_estimate_paces_calls() -> None:
    bucket = BucketEstimate()
    assert not bucket.known and bucket.wait(10, 0.0) == 0.0
    bucket.learn(2000, 15, 100, now=10.0)
    assert bucket.wait(10, 10.0) == 0.0
    bucket.reserve(10)
    assert bucket.wait(10, 10.0) == pytest.approx(0.05)
    assert bucket.wait(10, 10.05) == pytest.approx(0.0)
    bucket.release(10)
    assert bucket.level(100.0) == 2000  # never above the maximum
    assert bucket.restore_time(252, 52, 100) == pytest.approx(2.0)


@given(st.lists(st.floats(1, 1000), min_size=1, max_size=50), st.floats(1, 1000))
def test_paced_calls_never_overdraw_the_bucket(costs: list[float], rate: float) -> None:
    """Calls started when ``wait`` says so never take more than the bucket holds."""
    bucket = BucketEstimate()
    bucket.learn(2000, 0, rate, now=0.0)
    now = 0.0
    for cost in costs:
        now += bucket.wait(cost, now)
        level = bucket.level(now)
        assert level >= cost - 1e-6
        bucket.learn(2000, level - cost, rate, now)


def test_backoff_grows_and_is_capped() -> None:
    assert backoff(1, 1.0) == pytest.approx(0.2)
    assert backoff(3, 1.0) == pytest.approx(0.8)
    assert backoff(30, 1.4) == pytest.approx(14.0)
