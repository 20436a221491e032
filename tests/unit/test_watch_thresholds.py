"""``availability.watch_thresholds``: which changes a watch with ``low_stock`` or
``min_delta`` sends. The properties are stated as what a client may rely on (the
guarantees of README "Live figures"), independently of how the module decides."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from availability.watch_thresholds import (
    Thresholds,
    figures_of,
    location_calls_for_sending,
    worth_sending,
)

LOCATIONS = ("S1", "S2", "W1")
ats = st.integers(min_value=0, max_value=40)
figures = st.dictionaries(st.sampled_from(LOCATIONS), ats, max_size=len(LOCATIONS))
thresholds = st.builds(
    Thresholds,
    low_stock=st.none() | st.integers(min_value=0, max_value=20),
    min_delta=st.none() | st.integers(min_value=1, max_value=15),
).filter(lambda t: t.active)


def honest(t: Thresholds, shown: dict[str, int], current: dict[str, int]) -> bool:
    """The last message (``shown``) still tells the truth about ``current`` by the
    watch's terms: per location, exact unless both are above low_stock, and less than
    min_delta away. A location a message did not list counts as 0."""
    for location in set(shown) | set(current):
        before, now = shown.get(location, 0), current.get(location, 0)
        if (
            t.low_stock is not None
            and before != now
            and not (before > t.low_stock and now > t.low_stock)
        ):
            return False
        if t.min_delta is not None and abs(now - before) >= t.min_delta:
            return False
    return True


@given(thresholds, figures, figures)
def test_a_change_is_sent_exactly_when_the_last_message_would_stop_being_true(
    t: Thresholds, shown: dict[str, int], current: dict[str, int]
) -> None:
    assert worth_sending(t, shown, current) == (not honest(t, shown, current))


@given(thresholds, st.lists(figures, min_size=1, max_size=30))
def test_along_any_sequence_the_last_message_stays_true(
    t: Thresholds, changes: list[dict[str, int]]
) -> None:
    shown = changes[0]  # the initial message is always sent
    for current in changes[1:]:
        if worth_sending(t, shown, current):
            shown = current
        assert honest(t, shown, current)


@given(st.integers(min_value=0, max_value=10), st.integers(min_value=1, max_value=30))
def test_selling_down_unit_by_unit_sends_the_crossing_and_each_unit_below(
    low: int, start_above: int
) -> None:
    start = low + start_above
    sent = [start]
    for now in range(start - 1, -1, -1):
        if worth_sending(Thresholds(low_stock=low), {"S1": sent[-1]}, {"S1": now}):
            sent.append(now)
    assert sent == [start, *range(low, -1, -1)]
    # Restocked above the level: the way back up is sent too, once.
    assert worth_sending(Thresholds(low_stock=low), {"S1": 0}, {"S1": low + 5})
    assert not worth_sending(Thresholds(low_stock=low), {"S1": low + 5}, {"S1": low + 9})


@given(st.integers(min_value=1, max_value=10), st.integers(min_value=0, max_value=60))
def test_min_delta_sends_every_delta_units(delta: int, start: int) -> None:
    sent = [start]
    for now in range(start - 1, -1, -1):
        if worth_sending(Thresholds(min_delta=delta), {"S1": sent[-1]}, {"S1": now}):
            sent.append(now)
    assert sent == list(range(start, -1, -delta))


def test_thresholds_are_per_location_and_an_unlisted_location_is_zero() -> None:
    low = Thresholds(low_stock=2)
    # S2 moves far above the level, S1 not at all: nothing to say.
    assert not worth_sending(low, {"S1": 1, "S2": 50}, {"S1": 1, "S2": 10})
    # The total fell from 51 to 11; only a location at or below 2 counts.
    assert worth_sending(low, {"S1": 1, "S2": 50}, {"S1": 0, "S2": 50})
    # A location appearing with 7 is a move from 0: crossing the level upwards.
    assert worth_sending(low, {"S1": 5}, {"S1": 5, "S2": 7})
    assert not worth_sending(Thresholds(min_delta=8), {"S1": 5}, {"S1": 5, "S2": 7})
    assert location_calls_for_sending(low, 3, 2) and not location_calls_for_sending(low, 4, 3)


def test_either_threshold_suffices() -> None:
    both = Thresholds(low_stock=2, min_delta=10)
    assert worth_sending(both, {"S1": 40}, {"S1": 30})  # min_delta
    assert worth_sending(both, {"S1": 3}, {"S1": 2})  # low_stock
    assert not worth_sending(both, {"S1": 40}, {"S1": 35})


def test_thresholds_are_validated() -> None:
    with pytest.raises(ValueError, match="low_stock"):
        Thresholds(low_stock=-1)
    with pytest.raises(ValueError, match="min_delta"):
        Thresholds(min_delta=0)
    with pytest.raises(ValueError, match="needs thresholds"):
        worth_sending(Thresholds(), {}, {})
    assert not Thresholds().active and Thresholds(low_stock=0).active


def test_figures_of_a_watched_view() -> None:
    answer = {
        "sku": "A",
        "channel": "online",
        "ats": 5,
        "locations": [
            {"location_id": "S1", "on_hand": 9, "ats": 2},
            {"location_id": "S2", "on_hand": 3, "ats": 3},
        ],
    }
    assert figures_of(answer) == {"S1": 2, "S2": 3}
