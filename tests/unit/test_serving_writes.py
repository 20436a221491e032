"""What the serving writer sends (streams.serving): the locations marked, computed
alone; a SKU written whole when marked so or when its record cannot take a partial
write; and the change feed given the served figures of exactly what changed."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, cast

from availability.ats import LocationAvailability
from availability.events import ErpBalance, PosSale
from availability.rules import RuleBook
from availability.state import SkuState, fold
from infra.records import RecordWrite
from infra.store import AvailabilityStore, HoldCounts, WriteReply
from streams.change_feed import ChangeFeed
from streams.serving import ServingWriter

NOW = 1_800_000_000_000_000


class ScriptedStore:
    """Answers each write as told: ``need_full`` SKUs refuse partial writes once."""

    def __init__(self, need_full: set[str], held: dict[str, int] | None = None) -> None:
        self.need_full = need_full
        self.held = held or {}
        self.writes: list[tuple[str, bool, list[bytes]]] = []

    async def write_encoded(
        self,
        records: Sequence[RecordWrite],
        first_version: int | None = None,
        handed_over: Mapping[str, Collection[str]] | None = None,
    ) -> tuple[list[WriteReply], HoldCounts]:
        replies = []
        for record in records:
            self.writes.append((record.sku, record.whole, record.args))
            if not record.whole and record.sku in self.need_full:
                self.need_full.discard(record.sku)
                replies.append(WriteReply(0, True, {}))
            else:
                replies.append(WriteReply(7, False, self.held, ("S-3", "S-99")))
        return replies, HoldCounts(0, 0)


class Feed:
    def __init__(self) -> None:
        self.changes: list[Any] = []

    async def wait_room(self) -> None:
        return None

    def add(self, changes: Sequence[Any]) -> None:
        self.changes.extend(changes)


def stocked(sku: str, stores: int) -> SkuState:
    state = SkuState(sku)
    for n in range(stores):
        fold(state, ErpBalance(f"b{n}", sku, f"S-{n}", 10, NOW - 10))
    return state


def writer(states: dict[str, SkuState], store: ScriptedStore, feed: Feed) -> ServingWriter:
    serving = ServingWriter(
        cast(AvailabilityStore, store),
        rules=RuleBook,
        state_of=states.get,
        owns=lambda sku: True,
        feed=cast(ChangeFeed, feed),
        clock=lambda: NOW,
    )
    serving.rules_ready.set()
    return serving


def location_ids(args: list[bytes], whole: bool) -> list[str]:
    """The locations a write's arguments carry (``infra.records`` layout)."""
    if whole:
        totals = int(args[2])
        at = 3 + 2 * totals
    else:
        at = 1
    count, at = int(args[at]), at + 1
    found = []
    for _ in range(count):
        found.append(args[at].decode())
        at += 4 + 2 * int(args[at + 3])
    return found


async def test_only_the_marked_locations_are_computed_and_written() -> None:
    state = stocked("A", 50)
    fold(state, PosSale("sale", "A", "S-7", 1, NOW - 5))
    store, feed = ScriptedStore(set(), held={"S-7": 2}), Feed()
    serving = writer({"A": state}, store, feed)
    serving.mark_locations({"A": {"S-7"}})
    assert await serving.flush()
    [(sku, whole, args)] = store.writes
    assert (sku, whole, location_ids(args, whole)) == ("A", False, ["S-7"])
    # The feed gets the location written, with its live holds counted, and the
    # locations of the holds the write purged (S-99: no state there, nothing).
    [(fed_sku, version, locations)] = feed.changes
    assert (fed_sku, version) == ("A", 7)
    assert locations == [
        LocationAvailability("S-7", 9, 2, 0, 0, 0, {}),
        LocationAvailability("S-3", 10, 0, 0, 0, 0, {}),
        "S-99",
    ]


async def test_a_record_that_cannot_take_a_partial_write_is_written_whole_at_once() -> None:
    states = {"A": stocked("A", 3), "B": stocked("B", 3)}
    store, feed = ScriptedStore({"A"}), Feed()
    serving = writer(states, store, feed)
    serving.mark_locations({"A": {"S-1"}, "B": {"S-2"}})
    assert await serving.flush()
    assert [(s, w, location_ids(a, w)) for s, w, a in store.writes] == [
        ("A", False, ["S-1"]),
        ("B", False, ["S-2"]),
        ("A", True, ["S-0", "S-1", "S-2"]),
    ]
    assert serving.pending == 0 and serving.writes == 2


async def test_marks_merge_and_a_whole_mark_wins() -> None:
    state = stocked("A", 5)
    store, feed = ScriptedStore(set()), Feed()
    serving = writer({"A": state}, store, feed)
    serving.mark_locations({"A": {"S-1"}})
    serving.mark_locations({"A": {"S-3"}})
    assert await serving.flush()
    assert location_ids(store.writes[-1][2], False) == ["S-1", "S-3"]
    serving.mark_locations({"A": {"S-1"}})
    serving.mark(["A"])
    serving.mark_locations({"A": {"S-2"}})
    assert await serving.flush()
    assert store.writes[-1][1] is True
