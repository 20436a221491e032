"""The operator commands' pure parts: argument parsing, dead-letter records, selection."""

from __future__ import annotations

import base64

import orjson
import pytest

from infra.config import Settings
from infra.dead_letters import dead_letter_record
from services.cli.__main__ import build_parser
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


def letter(**fields: object) -> DeadLetter:
    value = dead_letter_record(
        value=fields.pop("value", b'{"event_id":"e1","sku":"S"}'),  # type: ignore[arg-type]
        topic=str(fields.pop("topic", "acme.pos.transactions")),
        partition=2,
        offset=41,
        reason=str(fields.pop("reason", "missing required field 'location_id'")),
        event_id="e1",
        sku="S",
    )
    return parse_dead_letter(0, 7, b"S", value)


def test_a_dead_letter_that_never_was_on_its_topic_reads_back_with_its_context() -> None:
    value = dead_letter_record(
        value=b'{"event_id":"shopify:main:1:2:created","sku":"S","location_id":null}',
        topic="acme.orders.reservations",
        partition=-1,
        offset=-1,
        reason="the order names no location",
        event_id="shopify:main:1:2:created",
        sku="S",
        context={"webhook_id": "w-1", "shop": "main.myshopify.com"},
    )
    assert orjson.loads(value)["context"] == {"webhook_id": "w-1", "shop": "main.myshopify.com"}
    read = parse_dead_letter(1, 3, b"S", value)
    assert (read.topic, read.source_partition, read.source_offset) == (
        "acme.orders.reservations", -1, -1,
    )  # fmt: skip
    # Replayable like any other: a patch supplies what was missing.
    patched = orjson.loads(replay_value(read, {"location_id": "WH-1"}))
    assert patched["location_id"] == "WH-1"
    assert "context" not in orjson.loads(dead_letter_record(
        value=None, topic="t", partition=0, offset=0, reason="r"
    ))  # fmt: skip


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
    record = orjson.loads(
        dead_letter_record(value=raw, topic="t", partition=0, offset=0, reason="r")
    )
    assert base64.b64decode(record["original"]) == raw
    assert parse_dead_letter(0, 0, None, orjson.dumps(record)).original == raw
