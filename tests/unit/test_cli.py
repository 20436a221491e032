"""The operator commands' pure parts: argument parsing, dead-letter records, selection."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson
import pytest

from availability.events import ErpBalance, event_to_dict, invalid_kind, parse_event
from availability.identifiers import parse_timestamp
from availability.state import SkuState, fold
from infra.config import Settings
from infra.dead_letters import dead_letter_record, failure_reason
from services.cli.__main__ import build_parser
from services.cli.baseline import baseline_rows, default_voids, reset_event
from services.cli.dead_letters import (
    DeadLetter,
    Selection,
    UsageError,
    parse_dead_letter,
    parse_id,
    parse_patch,
    parse_since,
    replay_value,
)

SETTINGS = Settings(topic_prefix="acme.")
MIB = 1024 * 1024


def letter(**fields: object) -> DeadLetter:
    record = dead_letter_record(
        key=b"S",
        value=fields.pop("value", b'{"event_id":"e1","sku":"S"}'),  # type: ignore[arg-type]
        topic=str(fields.pop("topic", "acme.pos.transactions")),
        partition=2,
        offset=41,
        reason=str(fields.pop("reason", "missing required field 'location_id'")),
        event_id="e1",
        sku="S",
        max_bytes=int(fields.pop("max_bytes", MIB)),  # type: ignore[call-overload]
    )
    return parse_dead_letter(0, 7, record.key, record.value)


def test_a_dead_letter_that_never_was_on_its_topic_reads_back_with_its_context() -> None:
    value = dead_letter_record(
        key=b"S",
        value=b'{"event_id":"shopify:main:1:2:created","sku":"S","location_id":null}',
        topic="acme.orders.reservations",
        partition=-1,
        offset=-1,
        reason="the order names no location",
        event_id="shopify:main:1:2:created",
        sku="S",
        context={"webhook_id": "w-1", "shop": "main.myshopify.com"},
        max_bytes=MIB,
    ).value
    assert orjson.loads(value)["context"] == {"webhook_id": "w-1", "shop": "main.myshopify.com"}
    read = parse_dead_letter(1, 3, b"S", value)
    assert (read.topic, read.source_partition, read.source_offset) == (
        "acme.orders.reservations", -1, -1,
    )  # fmt: skip
    # Replayable like any other: a patch supplies what was missing.
    patched = orjson.loads(replay_value(read, {"location_id": "WH-1"}))
    assert patched["location_id"] == "WH-1"
    assert "context" not in orjson.loads(dead_letter_record(
        key=None, value=None, topic="t", partition=0, offset=0, reason="r", max_bytes=MIB
    ).value)  # fmt: skip


def test_a_dead_letter_record_reads_back_as_written() -> None:
    read = letter()
    assert read.id == "0:7"
    assert read.original == b'{"event_id":"e1","sku":"S"}'
    assert (read.topic, read.source_partition, read.source_offset) == (
        "acme.pos.transactions",
        2,
        41,
    )
    assert read.event_id == "e1"
    assert read.as_json(None)["original"] == '{"event_id":"e1","sku":"S"}'


def test_a_null_original_stays_null_and_cannot_be_replayed() -> None:
    read = letter(value=None)
    assert read.original is None
    assert read.preview() == "(no value)"
    with pytest.raises(ValueError, match="had no value"):
        replay_value(read, None)


@pytest.mark.parametrize(
    "value",
    [b"[]", b"not json", orjson.dumps({"topic": "t"}), orjson.dumps({"original": "%%%"})],
)
def test_records_that_are_not_dead_letters_are_refused(value: bytes) -> None:
    with pytest.raises(ValueError):
        parse_dead_letter(0, 0, None, value)


def test_the_preview_is_one_printable_line_of_bounded_width() -> None:
    read = letter(value=b'{"a":"line\nbreak\x00' + b"x" * 200 + b'"}')
    preview = read.preview(40)
    assert len(preview) == 40
    assert "\n" not in preview and "\x00" not in preview
    assert preview.endswith("…")


def test_selection_filters_combine() -> None:
    read = letter()
    assert Selection().matches(read, False, SETTINGS)
    assert Selection(reason="LOCATION").matches(read, False, SETTINGS)
    assert not Selection(reason="quantity").matches(read, False, SETTINGS)
    assert Selection(topic="pos.transactions").matches(read, False, SETTINGS)
    assert Selection(topic="acme.pos.transactions").matches(read, False, SETTINGS)
    assert not Selection(topic="erp.balances").matches(read, False, SETTINGS)
    assert Selection(ids=frozenset({"0:7"}), sku="S").matches(read, False, SETTINGS)
    assert not Selection(ids=frozenset({"0:8"})).matches(read, False, SETTINGS)
    assert not Selection(replayed=True).matches(read, False, SETTINGS)
    assert Selection(replayed=False).matches(read, False, SETTINGS)
    assert Selection(since=parse_since("2000-01-01T00:00:00Z")).matches(read, False, SETTINGS)
    assert not Selection(since=parse_since("2999-01-01T00:00:00Z")).matches(read, False, SETTINGS)


def test_a_patch_sets_fields_of_the_original_event() -> None:
    patched = orjson.loads(replay_value(letter(), {"location_id": "S1", "sku": "T"}))
    assert patched == {"event_id": "e1", "sku": "T", "location_id": "S1"}
    assert replay_value(letter(), None) == b'{"event_id":"e1","sku":"S"}'
    with pytest.raises(ValueError, match="not JSON"):
        replay_value(letter(value=b"{oops"), {"a": 1})
    with pytest.raises(ValueError, match="not one"):
        replay_value(letter(value=b"[1]"), {"a": 1})


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (parse_id, "7", "expected <partition>:<offset>"),
        (parse_id, "a:1", "expected <partition>:<offset>"),
        (parse_patch, "{", "not valid JSON"),
        (parse_patch, "{}", "non-empty JSON object"),
        (parse_patch, '"x"', "non-empty JSON object"),
        (parse_since, "yesterday", "not an RFC 3339 timestamp"),
    ],
)
def test_bad_arguments_are_refused_with_a_message(parse: object, text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse(text)  # type: ignore[operator]


def test_ids_are_normalised() -> None:
    assert parse_id("00:017") == "0:17"


@pytest.mark.parametrize(
    "argv",
    [
        ["rebuild", "--timeout", "0"],
        ["rebuild", "--timeout", "soon"],
        ["dead-letters", "list", "--limit", "-1"],
        ["dead-letters", "list", "--id", "x"],
        ["dead-letters", "replay", "--replayed", "--not-replayed"],
        ["dead-letters"],
        ["nonsense"],
    ],
)
def test_the_parser_refuses_bad_arguments_with_exit_code_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_original_bytes_survive_base64() -> None:
    raw = bytes(range(256))
    record = dead_letter_record(
        key=None, value=raw, topic="t", partition=0, offset=0, reason="r", max_bytes=MIB
    )
    assert base64.b64decode(orjson.loads(record.value)["original"]) == raw
    read = parse_dead_letter(0, 0, None, record.value)
    assert read.original == raw
    assert not read.truncated
    assert "original_truncated" not in orjson.loads(record.value)


@pytest.mark.parametrize("size", [MIB - 2000, MIB, 1_500_000, 20 * MIB])
def test_an_original_too_large_for_the_broker_is_kept_truncated_with_its_digest(
    size: int,
) -> None:
    raw = bytes(n % 251 for n in range(size))
    record = dead_letter_record(
        key=b"SKU-1",
        value=raw,
        topic="t",
        partition=0,
        offset=0,
        reason="x" * 50_000,
        max_bytes=MIB,
    )
    assert len(record.value) + len(record.key or b"") <= MIB - 1000
    data = orjson.loads(record.value)
    assert len(data["reason"]) == 1000
    read = parse_dead_letter(0, 0, record.key, record.value)
    assert read.truncated
    assert read.original_size == size
    assert read.original_sha256 == hashlib.sha256(raw).hexdigest()
    assert read.original is not None and raw.startswith(read.original)
    assert len(read.original) > MIB // 2  # as much as fits is kept
    assert read.preview().startswith("(truncated) ")
    assert read.as_json(None)["original_truncated"] is True
    with pytest.raises(ValueError, match="cannot be replayed"):
        replay_value(read, None)
    with pytest.raises(ValueError, match="cannot be replayed"):
        replay_value(read, {"location_id": "S1"})


def test_an_oversized_key_is_cut_and_described() -> None:
    key = b"k" * (2 * MIB)
    record = dead_letter_record(
        key=key, value=b"{}", topic="t", partition=0, offset=0, reason="r", max_bytes=MIB
    )
    assert record.key is not None and len(record.key) + len(record.value) <= MIB
    data = orjson.loads(record.value)
    assert (data["key_truncated"], data["key_size"]) == (True, 2 * MIB)
    assert data["key_sha256"] == hashlib.sha256(key).hexdigest()
    assert base64.b64decode(data["original"]) == b"{}"


def test_an_unexpected_failure_has_a_bounded_reason_of_its_own_kind() -> None:
    reason = failure_reason("folding", KeyError("x" * 10_000))
    assert reason.startswith("internal error while folding: KeyError: ")
    assert len(reason) == 1000
    assert invalid_kind(reason) == "internal_error"


# --- baseline show / reset ---------------------------------------------------------


def test_a_reset_event_is_dated_now_names_its_operator_and_reads_back() -> None:
    now = parse_timestamp("2026-11-22T10:00:00Z")
    event = reset_event(
        sku="SKU-1", location_id="S1", on_hand=12, voids=["b-2099"], operator="alice", now=now
    )
    assert (event.as_of, event.on_hand, event.voids, event.operator) == (
        now,
        12,
        ("b-2099",),
        "alice",
    )
    assert event.event_id.startswith("reset-2026-11-22T10:00:00Z-")
    assert parse_event(orjson.dumps(event_to_dict(event))) == event
    again = reset_event(
        sku="SKU-1", location_id="S1", on_hand=12, voids=[], operator="alice", now=now
    )
    assert again.event_id != event.event_id  # every count is an event of its own


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sku": "bad sku"}, "--sku"),
        ({"location_id": ""}, "--location"),
        ({"on_hand": -1}, "--on-hand"),
        ({"operator": ""}, "--operator"),
        ({"voids": [""]}, "voids"),
    ],
)
def test_a_reset_that_the_worker_would_refuse_is_refused_here(
    changes: dict[str, object], message: str
) -> None:
    fields: dict[str, Any] = {
        "sku": "SKU-1", "location_id": "S1", "on_hand": 1, "voids": [], "operator": "a", "now": 0,
    }  # fmt: skip
    with pytest.raises(UsageError, match=message):
        reset_event(**{**fields, **changes})


def test_the_default_void_is_a_baseline_dated_in_the_future() -> None:
    now = parse_timestamp("2026-11-22T10:00:00Z")
    state = SkuState("S")
    fold(state, ErpBalance("b-2099", "S", "L", 500, parse_timestamp("2099-01-01T00:00:00Z")))
    fold(state, ErpBalance("b-old", "S", "M", 5, now - 1))
    assert default_voids(state, "L", now) == ["b-2099"]
    assert default_voids(state, "M", now) == []
    assert default_voids(None, "L", now) == []
    rows = baseline_rows(state, "L", now)
    assert rows[1] == ["L", "BASELINE", "b-2099", "500", "2099-01-01T00:00:00Z (future)"]
    assert rows[-1] == ["L", "on hand", "", "500", ""]
