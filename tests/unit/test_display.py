"""Bounded previews of values in error messages (availability.display)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from availability.display import clip, preview
from availability.events import InvalidEvent, parse_event
from availability.rules import InvalidRule, parse_rule
from services.http.errors import ApiError
from services.http.validation import parse_batch_request

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=60,
)


def nested(depth: int) -> Any:
    """A JSON array nested ``depth`` deep, as a JSON parser returns it."""
    return orjson.loads(b"[" * depth + b"]" * depth) if depth < 1024 else _deep_list(depth)


def _deep_list(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


@given(json_values, st.integers(5, 200))
def test_any_json_value_gives_a_bounded_preview(value: Any, limit: int) -> None:
    shown = preview(value, limit)
    assert len(shown) <= limit
    full = repr(value)
    if len(full) <= limit:
        assert shown == full  # short values are shown whole, exactly as repr would
    else:
        assert shown.endswith("...")


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deep_nesting_is_cut_not_a_recursion_error(depth: int) -> None:
    value = nested(depth)
    with pytest.raises(RecursionError):
        repr(_deep_list(100_000))  # what this module is there to avoid
    shown = preview(value)
    assert shown == "[" * 77 + "..."


def test_huge_values_cost_what_their_preview_costs() -> None:
    huge_text = "x" * 5_000_000
    huge_list = list(range(2_000_000))
    huge_int = 10**20_000  # str() of it raises ValueError (more than 4300 digits)
    started = time.perf_counter()
    for value in (huge_text, huge_list, huge_int, {"k": huge_text}):
        assert len(preview(value)) <= 80
    assert time.perf_counter() - started < 0.05
    assert preview(huge_int) == "<integer of 66439 bits>"
    assert preview(-(2**63)) == str(-(2**63))


def test_scalars_and_containers_read_like_repr() -> None:
    assert preview("a'b") == repr("a'b")
    assert preview(b"\xff\x00") == repr(b"\xff\x00")
    assert preview({"a": [1, 2.5, None, True]}) == "{'a': [1, 2.5, None, True]}"
    assert preview(object()) == "<object>"
    assert preview([1, 2, 3], limit=6) == "[1,..."


def test_clip() -> None:
    assert clip("abcdef", 6) == "abcdef"
    assert clip("abcdefg", 6) == "abc..."
    assert clip("abcdefg", 2) == "ab"


def test_an_event_with_a_deep_or_huge_field_gets_a_short_reason() -> None:
    base = {"event_id": "e", "type": "pos.sale", "sku": "S", "quantity": 1}
    bodies = [
        orjson.dumps({**base, "location_id": "L", "occurred_at": "x" * 2_000_000}),
        b'{"event_id": "e", "type": "pos.sale", "sku": "S", "quantity": 1, "location_id": '
        + b"[" * 1000
        + b"]" * 1000
        + b', "occurred_at": "2026-11-22T10:00:00Z"}',
        orjson.dumps({**base, "type": "x" * 1_000_000}),
        orjson.dumps({**base, "location_id": "L", "occurred_at": "2026-11-22T10:00:00Z"}).replace(
            b'"quantity":1', b'"quantity":' + b"9" * 5000
        ),
    ]
    for body in bodies:
        with pytest.raises(InvalidEvent) as caught:
            parse_event(body)
        assert len(caught.value.reason) < 300, caught.value.reason


def test_a_rule_or_a_batch_with_deep_values_gets_a_short_message() -> None:
    deep = nested(1000)
    with pytest.raises(InvalidRule) as refused:
        parse_rule("r", {"rule_id": deep, "channel_buffers": {"x" * 10_000: deep}})
    assert len(str(refused.value)) < 400
    with pytest.raises(ApiError) as error:
        parse_batch_request({"skus": [deep]})
    assert error.value.status_code == 400
    assert len(error.value.message) < 200
