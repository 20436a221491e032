"""The drift check: reading ERP exports, on-hand as of a moment, and the causes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from availability.drift import (
    ExportFormatError,
    ExportRow,
    compare,
    on_hand_as_of,
    read_export,
)
from availability.events import event_from_dict, event_time
from availability.identifiers import parse_timestamp
from availability.state import SkuState, fold_all
from tests.unit.strategies import LOCATIONS, event_sets, timestamp

T9 = "2026-11-22T09:00:00Z"
T10 = "2026-11-22T10:00:00Z"
T11 = "2026-11-22T11:00:00Z"


def balance(event_id: str, on_hand: int, as_of: str, loc: str = "S1") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "erp.balance",
        "sku": "SKU-1",
        "location_id": loc,
        "on_hand": on_hand,
        "as_of": as_of,
    }


def sale(event_id: str, quantity: int, at: str, loc: str = "S1") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "pos.sale",
        "sku": "SKU-1",
        "location_id": loc,
        "quantity": quantity,
        "occurred_at": at,
    }


def states_of(*events: dict[str, Any]) -> dict[str, SkuState]:
    return {"SKU-1": fold_all("SKU-1", [event_from_dict(e) for e in events])}


def row(on_hand: int, as_of: str, loc: str = "S1", sku: str = "SKU-1", line: int = 2) -> ExportRow:
    return ExportRow(line, sku, loc, on_hand, parse_timestamp(as_of))


# --------------------------------------------------------------------------- reading


def test_a_csv_export_is_read_and_bad_lines_are_reported_by_number() -> None:
    text = (
        "sku,location_id,on_hand,as_of,extra\n"
        f"SKU-1,S1,10,{T10},x\n"
        f"SKU-1,S2,ten,{T10},x\n"
        "\n"
        f"SKU-2,S1,5,{T10}\n"
        f"bad sku,S1,5,{T10},x\n"
        f"SKU-3,S1,-2,yesterday,x\n"
        f"SKU-1,S1,11,{T10},x\n"
        f"SKU-4,S9,0,{T11},x\n"
    )
    rows, errors = read_export(text, "csv")
    assert [(r.line, r.sku, r.location_id, r.on_hand) for r in rows] == [
        (2, "SKU-1", "S1", 10),
        (9, "SKU-4", "S9", 0),
    ]
    assert rows[1].as_of == parse_timestamp(T11)
    assert [(e.line, e.message) for e in errors] == [
        (3, "on_hand 'ten' is not a whole number"),
        (5, "4 values, the header names 5"),
        (6, "sku 'bad sku' is not a valid SKU"),
        (7, "as_of 'yesterday' is not an RFC 3339 timestamp"),
        (8, "SKU-1 at S1 again (first on line 2)"),
    ]


def test_a_jsonl_export_is_read_and_bad_lines_are_reported_by_number() -> None:
    good = {"sku": "SKU-1", "location_id": "S1", "on_hand": 3, "as_of": T10}
    lines = [
        orjson.dumps(good),
        b"{oops",
        b"[1]",
        orjson.dumps({**good, "location_id": "S2", "on_hand": True}),
        orjson.dumps({k: v for k, v in good.items() if k != "as_of"} | {"location_id": "S3"}),
        orjson.dumps({**good, "location_id": "S4", "on_hand": "-4"}),
    ]
    rows, errors = read_export(b"\n".join(lines).decode(), "jsonl")
    assert [(r.line, r.location_id, r.on_hand) for r in rows] == [(1, "S1", 3), (6, "S4", -4)]
    assert [e.line for e in errors] == [2, 3, 4, 5]
    assert errors[0].message.startswith("not valid JSON")
    assert errors[1].message == "not a JSON object"
    assert errors[3].message == "missing as_of"


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ("", "csv", "empty"),
        ("\n\n", "jsonl", "empty"),
        ("sku,location_id,on_hand\nSKU-1,S1,3\n", "csv", "lacks as_of"),
        ("a", "xml", "unknown export format"),
    ],
)
def test_an_unusable_export_is_refused(text: str, kind: str, message: str) -> None:
    with pytest.raises(ExportFormatError, match=message):
        read_export(text, kind)


# --------------------------------------------------------------------------- causes


def test_equal_figures_and_differences_within_the_threshold_are_no_drift() -> None:
    states = states_of(balance("b", 10, T9), sale("s", 2, T10))
    assert compare(states, [row(8, T10)]).differences == []
    assert compare(states, [row(9, T10)], threshold=1).differences == []
    assert len(compare(states, [row(9, T10)]).differences) == 1


def test_sales_after_the_export_explain_the_difference() -> None:
    states = states_of(balance("b", 10, T9), sale("s1", 2, T10), sale("s2", 3, T11))
    report = compare(states, [row(8, "2026-11-22T10:30:00Z")])
    [difference] = report.differences
    assert difference.cause == "events_after_as_of"
    assert difference.detail == "1 event(s) after as_of, net -3, not in the export yet"
    assert (difference.erp_on_hand, difference.service_on_hand, difference.difference) == (
        8,
        5,
        -3,
    )
    assert report.drifted == 0  # no fault


def test_a_location_the_service_never_heard_of() -> None:
    report = compare(
        states_of(balance("b", 10, T9)), [row(4, T10, loc="S7"), row(1, T10, "S1", "SKU-9")]
    )
    assert [(d.sku, d.location_id, d.cause) for d in report.differences] == [
        ("SKU-1", "S1", "not_in_export"),
        ("SKU-1", "S7", "missing_location"),
        ("SKU-9", "S1", "missing_location"),
    ]
    assert report.drifted == 3


def test_an_export_older_than_the_service_balance() -> None:
    report = compare(states_of(balance("b", 10, T11)), [row(4, T10)])
    [difference] = report.differences
    assert difference.cause == "export_older"
    assert "10 as of 2026-11-22T11:00:00Z" in difference.detail


def test_negative_stock_and_unexplained_drift() -> None:
    oversold = compare(states_of(balance("b", 1, T9), sale("s", 3, T10)), [row(5, T11)])
    assert [d.cause for d in oversold.differences] == ["negative_stock"]
    lost = compare(states_of(balance("b", 10, T9), sale("s", 3, T10)), [row(5, T11)])
    [difference] = lost.differences
    assert difference.cause == "unexplained"
    assert difference.detail == "as of the export's as_of the service had 7"
    assert lost.by_cause()["unexplained"] == 1
    assert lost.as_json()["drifted"] == 1


# --------------------------------------------------------------------------- on hand at a moment


@given(event_sets(), st.integers(0, 59))
def test_on_hand_as_of_a_moment_is_the_fold_of_the_events_until_then(
    events: list[dict[str, Any]], minute: int
) -> None:
    moment = parse_timestamp(timestamp(minute, 15))
    parsed = [event_from_dict({**e, "sku": "SKU-A"}) for e in events]
    everything = fold_all("SKU-A", parsed)
    until = fold_all("SKU-A", [e for e in parsed if event_time(e) <= moment])
    for location in LOCATIONS:
        got = on_hand_as_of(everything, location, moment)
        baseline = everything.baselines.get(location)
        newer = baseline is not None and baseline.as_of > moment
        if newer or everything.cut(location) > moment:
            assert got is None
        else:
            assert got == until.on_hand(location)
