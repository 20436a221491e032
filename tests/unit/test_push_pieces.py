"""The push's pieces without I/O: reading change-feed records, coalescing levels and
what may be committed."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from services.push.feed import parse_change
from services.push.levels import Levels


def feed(**overrides: object) -> bytes:
    record: dict[str, object] = {
        "sku": "SKU-1", "location_id": "S1", "version": 7,
        "computed_at": "2026-11-23T08:00:00.5Z",
        "on_hand": 10, "reserved": 2, "in_transit": 0, "damaged": 0, "safety_stock": 1,
        "buffers": {"online": 3, "store": 1}, "ats": 7,
    }  # fmt: skip
    record.update(overrides)
    return orjson.dumps(record)


def test_a_record_gives_its_location_s_figure_for_the_channel() -> None:
    change = parse_change(feed(), "online")
    assert change is not None
    assert change.sku == "SKU-1" and change.version == 7
    assert change.figures == {"S1": 4}  # 10 - 2 - 1 - 3
    assert change.computed_at == 1795420800.5
    other = parse_change(feed(), "marketplace")
    assert other is not None and other.figures == {"S1": 7}
    short = parse_change(feed(location_id="S2", on_hand=1, buffers={}), "online")
    assert short is not None and short.figures == {"S2": 0}  # never below 0


def test_unreadable_records_are_skipped_not_fatal() -> None:
    for bad in (
        b"not json",
        b"[]",
        feed(sku="bad sku"),
        feed(version="7"),
        feed(computed_at="yesterday"),
        feed(on_hand=None),
        feed(location_id=""),
        feed(buffers={"online": "3"}),
    ):
        assert parse_change(bad, "online") is None
    assert parse_change(None, "online") is None  # a tombstone


def test_levels_coalesce_to_the_latest_figure_and_keep_the_first_offset() -> None:
    levels = Levels()
    entry = levels.offer("A", "S1", 5, 1, 100.0, 0, 10)
    levels.schedule(entry, 100.0)
    again = levels.offer("A", "S1", 3, 2, 101.0, 0, 11)
    assert again is entry and entry.figure == 3 and entry.version == 2
    assert entry.since == 100.0 and entry.first_offset == 10
    other = levels.offer("B", "S1", 1, 1, 102.0, 1, 4)
    levels.schedule(other, 200.0)
    assert levels.first_offsets() == {0: 10, 1: 4}
    assert levels.next_due() == 100.0
    taken = levels.take_due(150.0, 250)
    assert taken == [entry] and levels.next_due() == 200.0
    levels.start(taken)
    assert levels.newest_version(("A", "S1")) == 2
    assert levels.first_offsets() == {0: 10, 1: 4}  # under way still holds the commit
    levels.finish(taken)
    assert levels.first_offsets() == {1: 4}
    levels.requeue(entry, 160.0)
    assert levels.take_due(160.0, 250) == [entry]


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 100)), min_size=1, max_size=60))
def test_the_commit_never_passes_a_pending_level(offers: list[tuple[int, int]]) -> None:
    levels = Levels()
    for offset, (sku, figure) in enumerate(offers):
        entry = levels.offer(f"S{sku}", "L", figure, offset + 1, float(offset), 0, offset)
        levels.schedule(entry, float(offset))
    first_of = {}
    for offset, (sku, _) in enumerate(offers):
        first_of.setdefault(f"S{sku}", offset)
    assert levels.first_offsets() == {0: min(first_of.values())}
    taken = levels.take_due(1e9, 2)
    levels.start(taken)
    assert levels.first_offsets()[0] == min(first_of.values())
