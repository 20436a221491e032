"""Which reservation holds a record write hands over (streams.serving, README
"Reservations"): the lines the written state includes, none lost to a failed write,
and after a recovery every recent line."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import cast

from redis.exceptions import ConnectionError as RedisConnectionError

from availability.events import ReservationCreated
from availability.rules import RuleBook
from availability.state import SkuState, fold
from infra.records import RecordWrite
from infra.store import AvailabilityStore, HoldCounts, WriteReply
from streams.serving import ServingWriter

SECOND = 1_000_000
NOW = 1_800_000_000 * SECOND


class RecordingStore:
    """Records what each write would hand over; fails the writes it is told to."""

    def __init__(self) -> None:
        self.handed: list[dict[str, set[str]]] = []
        self.fail_next = 0

    async def write_encoded(
        self,
        records: Sequence[RecordWrite],
        first_version: int | None = None,
        handed_over: Mapping[str, Collection[str]] | None = None,
    ) -> tuple[list[WriteReply], HoldCounts]:
        if self.fail_next:
            self.fail_next -= 1
            raise RedisConnectionError("Redis is away")
        self.handed.append({sku: set(ids) for sku, ids in (handed_over or {}).items()})
        handed = HoldCounts(sum(map(len, (handed_over or {}).values())), 0)
        return [WriteReply(0, False, {}) for _ in records], handed


def created(reservation_id: str, sku: str, at: int) -> ReservationCreated:
    return ReservationCreated(f"e-{reservation_id}", sku, reservation_id, "S-1", 1, at)


def writer_for(states: dict[str, SkuState], store: RecordingStore) -> ServingWriter:
    writer = ServingWriter(
        cast(AvailabilityStore, store),
        rules=RuleBook,
        state_of=states.get,
        owns=lambda sku: True,
        clock=lambda: NOW,
        handover_horizon=200 * SECOND,
    )
    writer.rules_ready.set()
    return writer


async def test_a_write_hands_over_the_lines_folded_before_it_and_keeps_them_if_it_fails() -> None:
    state = SkuState("A")
    fold(state, created("R1", "A", NOW))
    store = RecordingStore()
    writer = writer_for({"A": state}, store)
    writer.note_folded("A", ["R1"])
    writer.mark(["A"])
    store.fail_next = 1
    assert not await writer.flush()  # the failed write hands over nothing...
    assert store.handed == []
    assert await writer.flush()  # ...and its retry hands R1 over
    assert store.handed == [{"A": {"R1"}}]
    assert writer.handed_over == 1
    writer.mark(["A"])
    assert await writer.flush()
    assert store.handed[-1] == {}  # once only


async def test_a_recovered_sku_hands_over_its_recent_lines_only() -> None:
    state = SkuState("A")
    fold(state, created("OLD", "A", NOW - 500 * SECOND))
    fold(state, created("NEW", "A", NOW - 100 * SECOND))
    other = SkuState("B")
    fold(other, created("B1", "B", NOW))
    store = RecordingStore()
    writer = writer_for({"A": state, "B": other}, store)
    writer.mark_recovered(["A"])
    writer.mark(["B"])  # not recovered, nothing noted: nothing to hand over
    assert await writer.flush()
    assert store.handed == [{"A": {"NEW"}}]
