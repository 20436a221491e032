"""The worker's guards that need no broker: reading a message never raises, a serving
record that cannot be computed holds up no other, and the start-up check of the
private Faust parts it relies on (``streams.intake``, ``streams.serving``,
``streams.faust_internals``)."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any, cast

import orjson
import pytest

import streams.__main__ as worker_main
import streams.intake as intake
import streams.serving as serving
from availability.events import PosSale
from availability.rules import RuleBook
from availability.state import SkuState, fold
from infra.records import RecordWrite
from infra.store import AvailabilityStore, HoldCounts, WriteReply
from streams import faust_internals
from streams.intake import Clock, Refusal, read_event
from streams.serving import ServingWriter

SECOND = 1_000_000
NOW = 1_795_420_800 * SECOND  # 2026-11-23T08:00:00Z
CLOCK = Clock(NOW, 300 * SECOND, 7 * 24 * 3600 * SECOND)


def sale(**changes: Any) -> bytes:
    event = {
        "event_id": "e1",
        "type": "pos.sale",
        "sku": "S",
        "location_id": "L",
        "quantity": 1,
        "occurred_at": "2026-11-23T07:59:00Z",
    }
    return orjson.dumps({**event, **changes})


def test_a_valid_event_is_read() -> None:
    assert isinstance(read_event(sale(), CLOCK), PosSale)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (None, "empty_message"),
        (b"\xff\xfe not utf-8", "malformed_json"),
        (b"[" * 5000 + b"]" * 5000, "malformed_json"),
        (sale(occurred_at="2026-11-23T08:05:01Z"), "future_timestamp"),
        (
            sale(
                type="reservation.released", reservation_id="R", occurred_at="2026-11-01T00:00:00Z"
            ),
            "too_old",
        ),
    ],
)
def test_a_refused_message_says_why_with_a_bounded_kind(value: bytes | None, kind: str) -> None:
    refused = read_event(value, CLOCK)
    assert isinstance(refused, Refusal)
    assert refused.kind == kind


def test_an_unexpected_failure_while_reading_is_a_refusal_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(value: object) -> object:
        raise MemoryError("a bug, not bad input")

    monkeypatch.setattr(intake, "parse_event", broken)
    refused = read_event(sale(), CLOCK)
    assert isinstance(refused, Refusal)
    assert refused.kind == "internal_error"
    assert refused.reason == (
        "internal error while reading the event: MemoryError: a bug, not bad input"
    )


class FakeStore:
    def __init__(self) -> None:
        self.written: list[str] = []

    async def write_encoded(
        self,
        records: Sequence[RecordWrite],
        first_version: int | None = None,
        handed_over: Mapping[str, Collection[str]] | None = None,
    ) -> tuple[list[WriteReply], HoldCounts]:
        self.written.extend(record.sku for record in records)
        return [WriteReply(1, False, {}) for _ in records], HoldCounts(0, 0)


async def test_a_record_that_cannot_be_computed_holds_up_no_other(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    states = {}
    for sku in ("A", "BAD", "C"):
        state = states[sku] = SkuState(sku)
        fold(state, PosSale("e", sku, "L", 1, NOW))
    real_build = serving.build_availability

    def build(state: SkuState, rules: RuleBook, now: int) -> Any:
        if state.sku == "BAD":
            raise ZeroDivisionError("a bug")
        return real_build(state, rules, now)

    monkeypatch.setattr(serving, "build_availability", build)
    store = FakeStore()
    writer = ServingWriter(
        cast(AvailabilityStore, store),
        rules=RuleBook,
        state_of=states.get,
        owns=lambda sku: True,
    )
    writer.rules_ready.set()
    with caplog.at_level(logging.ERROR, logger="streams.serving"):
        writer.mark(["A", "BAD", "C"])
        assert await writer.flush()
        assert sorted(store.written) == ["A", "C"]
        assert writer.pending == 0  # not retried by itself
        writer.mark(["BAD"])
        assert await writer.flush()
    assert writer.record_errors == 2
    assert [r.message for r in caplog.records] == [
        "serving layer: the record of BAD cannot be computed"
    ]


def test_every_private_part_the_worker_uses_is_there() -> None:
    assert faust_internals.problems() == []


def test_a_renamed_private_part_is_named_and_stops_the_worker(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    renamed = (
        *faust_internals.REQUIRED,
        (
            "faust Consumer._gone",
            "a test",
            faust_internals._assigned(faust_internals.faust_consumer.Consumer, "_gone"),
        ),
    )
    missing = faust_internals.problems(renamed)
    assert missing == ["faust Consumer._gone is missing (used for a test)"]
    monkeypatch.setattr(faust_internals, "problems", lambda: missing)
    monkeypatch.setattr(worker_main, "configure_logging", lambda settings: None)
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_info:
        worker_main.main()
    assert exit_info.value.code == 2
    assert "cannot start: faust Consumer._gone is missing (used for a test)" in caplog.text
