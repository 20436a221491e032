"""parse_event / event_from_dict: the input events of contract section 2."""

from __future__ import annotations

import calendar
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from availability.events import (
    ErpBalance,
    ErpBaselineReset,
    Event,
    InvalidEvent,
    PosReturn,
    PosSale,
    ReservationCreated,
    ReservationFulfilled,
    ReservationReleased,
    TransferReceived,
    TransferShipped,
    check_time,
    event_from_dict,
    event_to_dict,
    parse_event,
)
from availability.identifiers import format_timestamp

T1 = "2026-11-22T10:15:30.123Z"
T2 = "2026-11-22T12:00:00Z"
# Computed independently of the code under test.
US1 = calendar.timegm((2026, 11, 22, 10, 15, 30)) * 1_000_000 + 123_000
US2 = calendar.timegm((2026, 11, 22, 12, 0, 0)) * 1_000_000

ALL_MODELS = (
    ErpBalance,
    ErpBaselineReset,
    PosSale,
    PosReturn,
    TransferShipped,
    TransferReceived,
    ReservationCreated,
    ReservationReleased,
    ReservationFulfilled,
)

# type -> (the fields of contract section 2 besides event_id/type/sku, expected model)
VALID: dict[str, tuple[dict[str, Any], Event]] = {
    "erp.balance": (
        {"location_id": "DC-1", "on_hand": 40, "as_of": T1},
        ErpBalance(event_id="e1", sku="SKU-1", location_id="DC-1", on_hand=40, as_of=US1),
    ),
    "pos.sale": (
        {"location_id": "S-1", "quantity": 2, "occurred_at": T1},
        PosSale(event_id="e1", sku="SKU-1", location_id="S-1", quantity=2, occurred_at=US1),
    ),
    "pos.return": (
        {"location_id": "S-1", "quantity": 1, "occurred_at": T1, "disposition": "damaged"},
        PosReturn(
            event_id="e1",
            sku="SKU-1",
            location_id="S-1",
            quantity=1,
            occurred_at=US1,
            disposition="damaged",
        ),
    ),
    "transfer.shipped": (
        {
            "transfer_id": "T-9",
            "from_location": "DC-1",
            "to_location": "S-1",
            "quantity": 5,
            "occurred_at": T1,
        },
        TransferShipped(
            event_id="e1",
            sku="SKU-1",
            transfer_id="T-9",
            from_location="DC-1",
            to_location="S-1",
            quantity=5,
            occurred_at=US1,
        ),
    ),
    "transfer.received": (
        {
            "transfer_id": "T-9",
            "from_location": "DC-1",
            "to_location": "S-1",
            "quantity": 4,
            "occurred_at": T1,
        },
        TransferReceived(
            event_id="e1",
            sku="SKU-1",
            transfer_id="T-9",
            from_location="DC-1",
            to_location="S-1",
            quantity=4,
            occurred_at=US1,
        ),
    ),
    "reservation.created": (
        {
            "reservation_id": "R-1",
            "location_id": "S-1",
            "quantity": 3,
            "occurred_at": T1,
            "expires_at": T2,
            "channel": "online",
        },
        ReservationCreated(
            event_id="e1",
            sku="SKU-1",
            reservation_id="R-1",
            location_id="S-1",
            quantity=3,
            occurred_at=US1,
            expires_at=US2,
            channel="online",
        ),
    ),
    "reservation.released": (
        {"reservation_id": "R-1", "location_id": "S-1", "occurred_at": T1},
        ReservationReleased(
            event_id="e1", sku="SKU-1", reservation_id="R-1", location_id="S-1", occurred_at=US1
        ),
    ),
    "erp.baseline_reset": (
        {
            "location_id": "S-1",
            "on_hand": 7,
            "as_of": T1,
            "voids": ["b9", "b2", "b9"],
            "operator": "alice",
        },
        ErpBaselineReset(
            event_id="e1",
            sku="SKU-1",
            location_id="S-1",
            on_hand=7,
            as_of=US1,
            voids=("b2", "b9"),
            operator="alice",
        ),
    ),
    "reservation.fulfilled": (
        {"reservation_id": "R-1", "location_id": "S-1", "quantity": 2, "occurred_at": T1},
        ReservationFulfilled(
            event_id="e1",
            sku="SKU-1",
            reservation_id="R-1",
            location_id="S-1",
            quantity=2,
            occurred_at=US1,
        ),
    ),
}
OPTIONAL = {"disposition", "expires_at", "channel", "voids"}


def body(kind: str, **changes: Any) -> dict[str, Any]:
    """A valid event of ``kind``; a change to ``...`` deletes that field."""
    data: dict[str, Any] = {"event_id": "e1", "type": kind, "sku": "SKU-1", **VALID[kind][0]}
    for name, value in changes.items():
        if value is ...:
            data.pop(name, None)
        else:
            data[name] = value
    return data


def raw(data: object) -> bytes:
    return orjson.dumps(data)


def reason_for(message: bytes | str | None) -> str:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(message)
    return caught.value.reason


# --- accepted events -----------------------------------------------------------


@pytest.mark.parametrize("kind", list(VALID))
def test_every_event_type_parses_to_its_model(kind: str) -> None:
    event = parse_event(raw(body(kind)))
    assert event == VALID[kind][1]
    assert type(event) is type(VALID[kind][1])


def test_str_input_is_accepted_like_bytes() -> None:
    assert parse_event(raw(body("pos.sale")).decode()) == VALID["pos.sale"][1]


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-22T11:15:30.123+01:00",
        "2026-11-22T05:45:30.123-04:30",
        "2026-11-22t10:15:30.123z",
        "2026-11-22T10:15:30.123000Z",
        "2026-11-22T10:15:30.123000999Z",  # beyond microseconds: truncated
    ],
)
def test_timestamps_are_normalised_to_utc_microseconds(text: str) -> None:
    event = parse_event(raw(body("pos.sale", occurred_at=text)))
    assert isinstance(event, PosSale)
    assert event.occurred_at == US1
    assert isinstance(event.occurred_at, int)


def test_offset_and_z_forms_of_one_instant_are_equal() -> None:
    plus = parse_event(raw(body("erp.balance", as_of="2026-11-22T11:15:30.123+01:00")))
    zulu = parse_event(raw(body("erp.balance", as_of="2026-11-22T10:15:30.123Z")))
    assert plus == zulu


def test_unknown_extra_fields_are_ignored() -> None:
    data = body("reservation.created", priority="high", meta={"a": [1, None]}, version=2)
    assert parse_event(raw(data)) == VALID["reservation.created"][1]


@pytest.mark.parametrize("disposition", [..., None])
def test_disposition_defaults_to_sellable(disposition: Any) -> None:
    event = parse_event(raw(body("pos.return", disposition=disposition)))
    assert isinstance(event, PosReturn)
    assert event.disposition == "sellable"


def test_sellable_disposition_is_kept() -> None:
    event = parse_event(raw(body("pos.return", disposition="sellable")))
    assert isinstance(event, PosReturn)
    assert event.disposition == "sellable"


@pytest.mark.parametrize("absent", [..., None])
def test_reservation_expires_at_and_channel_are_optional(absent: Any) -> None:
    event = parse_event(raw(body("reservation.created", expires_at=absent, channel=absent)))
    assert isinstance(event, ReservationCreated)
    assert (event.expires_at, event.channel) == (None, None)
    assert event.quantity == 3


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("on_hand", 0),
        ("on_hand", 1_000_000_000),
        ("sku", "a" * 128),
        ("sku", "Az09._:/-"),
        ("location_id", "L" * 64),
        ("event_id", "x" * 128),
        ("event_id", "ünïcode id"),
    ],
)
def test_boundary_values_are_accepted(field: str, value: Any) -> None:
    event = parse_event(raw(body("erp.balance", **{field: value})))
    assert getattr(event, field) == value


# --- rejected events -----------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (None, "empty message"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b'"pos.sale"', "must be a JSON object, got str"),
        (b"null", "must be a JSON object"),
        (b"42", "must be a JSON object, got int"),
    ],
)
def test_undecodable_messages_are_rejected(message: bytes | None, expected: str) -> None:
    assert expected in reason_for(message)


MISSING = [
    (kind, name)
    for kind, (fields, _) in VALID.items()
    for name in ["event_id", "type", "sku", *fields]
    if name not in OPTIONAL
]


@pytest.mark.parametrize(("kind", "name"), MISSING)
def test_each_missing_required_field_is_named(kind: str, name: str) -> None:
    assert reason_for(raw(body(kind, **{name: ...}))) == f"missing required field '{name}'"


@pytest.mark.parametrize(("kind", "name"), MISSING)
def test_null_required_field_counts_as_missing(kind: str, name: str) -> None:
    assert reason_for(raw(body(kind, **{name: None}))) == f"missing required field '{name}'"


def test_optional_fields_may_all_be_absent() -> None:
    for kind in VALID:
        parse_event(raw(body(kind, **dict.fromkeys(OPTIONAL, ...))))


BAD_FIELDS: list[tuple[str, str, Any, str]] = [
    # (type, field, value, text the reason must contain)
    ("pos.sale", "quantity", "3", "field 'quantity' must be an integer > 0"),
    ("pos.sale", "quantity", 3.0, "field 'quantity' must be an integer > 0"),
    ("pos.sale", "quantity", True, "field 'quantity' must be an integer > 0"),
    ("pos.sale", "quantity", 0, "field 'quantity' must be an integer > 0"),
    ("pos.sale", "quantity", -2, "field 'quantity' must be an integer > 0"),
    ("pos.sale", "quantity", 1_000_000_001, "at most 1000000000"),
    ("pos.return", "quantity", 0, "field 'quantity'"),
    ("transfer.shipped", "quantity", -1, "field 'quantity'"),
    ("transfer.received", "quantity", [1], "field 'quantity'"),
    ("reservation.created", "quantity", 0, "field 'quantity'"),
    ("reservation.fulfilled", "quantity", 2.5, "field 'quantity'"),
    ("erp.balance", "on_hand", -1, "field 'on_hand' must be an integer >= 0"),
    ("erp.baseline_reset", "voids", "b1", "field 'voids' must be a list"),
    ("erp.baseline_reset", "voids", [""], "field 'voids' must be a list"),
    ("erp.baseline_reset", "voids", ["x"] * 101, "at most 100 event ids"),
    ("erp.baseline_reset", "operator", "", "field 'operator' must be a non-empty string"),
    ("erp.baseline_reset", "on_hand", -1, "field 'on_hand' must be an integer >= 0"),
    ("erp.balance", "on_hand", "10", "field 'on_hand' must be an integer >= 0"),
    ("erp.balance", "on_hand", 1_000_000_001, "field 'on_hand'"),
    ("pos.sale", "type", "pos.refund", "unknown event type 'pos.refund'"),
    ("pos.sale", "type", 7, "unknown event type 7"),
    ("pos.sale", "sku", "", "field 'sku' must be 1-128 characters"),
    ("pos.sale", "sku", "S" * 129, "field 'sku' must be 1-128 characters"),
    ("pos.sale", "sku", "SKU 1", "field 'sku'"),
    ("pos.sale", "sku", "SKÜ-1", "field 'sku'"),
    ("pos.sale", "sku", 12345, "field 'sku'"),
    ("pos.sale", "location_id", "L" * 65, "field 'location_id' must be a location id"),
    ("pos.sale", "location_id", "", "field 'location_id'"),
    ("transfer.shipped", "from_location", "DC 1", "field 'from_location'"),
    ("transfer.received", "to_location", "S#1", "field 'to_location'"),
    ("transfer.shipped", "transfer_id", "", "field 'transfer_id'"),
    ("reservation.released", "reservation_id", "R" * 129, "field 'reservation_id'"),
    ("reservation.fulfilled", "reservation_id", 1, "field 'reservation_id'"),
    ("reservation.created", "channel", "Online", "field 'channel' must match"),
    ("reservation.created", "channel", "", "field 'channel'"),
    ("reservation.created", "channel", "c" * 33, "field 'channel'"),
    ("pos.return", "disposition", "broken", "field 'disposition' must be"),
    ("pos.return", "disposition", "", "field 'disposition'"),
    ("pos.sale", "occurred_at", "2026-11-22T10:15:30", "field 'occurred_at': not an RFC 3339"),
    ("pos.sale", "occurred_at", "2026-11-22", "field 'occurred_at': not an RFC 3339"),
    ("pos.sale", "occurred_at", "2026-13-22T10:15:30Z", "field 'occurred_at': not a valid date"),
    ("pos.sale", "occurred_at", "2026-02-30T10:15:30Z", "field 'occurred_at': not a valid date"),
    ("pos.sale", "occurred_at", 1795342530, "field 'occurred_at' must be an RFC 3339 string"),
    ("erp.balance", "as_of", "yesterday", "field 'as_of'"),
    ("reservation.created", "expires_at", "2026-11-22 10:00", "field 'expires_at'"),
    ("reservation.created", "expires_at", 0, "field 'expires_at'"),
    ("pos.sale", "event_id", "", "field 'event_id' must be a non-empty string"),
    ("pos.sale", "event_id", "e" * 129, "field 'event_id' must be a non-empty string"),
    ("pos.sale", "event_id", 17, "field 'event_id' must be a non-empty string"),
]


@pytest.mark.parametrize(("kind", "name", "value", "expected"), BAD_FIELDS)
def test_bad_field_values_are_rejected_with_a_specific_reason(
    kind: str, name: str, value: Any, expected: str
) -> None:
    assert expected in reason_for(raw(body(kind, **{name: value})))


def test_rejection_carries_the_event_id_and_sku_when_known() -> None:
    with pytest.raises(InvalidEvent) as caught:
        event_from_dict(body("pos.sale", quantity=0))
    assert (caught.value.event_id, caught.value.sku) == ("e1", "SKU-1")
    assert str(caught.value) == caught.value.reason


# --- never any other exception -------------------------------------------------

FIELD_NAMES = sorted({"event_id", "type", "sku"} | {n for f, _ in VALID.values() for n in f})

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from([T1, "2026-11-22T10:15:30+01:00", "pos.sale", "SKU-1", "online"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.sampled_from(FIELD_NAMES), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(list(VALID)))
    data = body(kind)
    name = draw(st.sampled_from([*sorted(data), *sorted(OPTIONAL)]))
    value = draw(st.just(...) | json_values)
    return body(kind, **{name: value})


def outcome(parse: Any, arg: Any) -> Event | None:
    """The parsed event, or None for InvalidEvent; any other exception propagates."""
    try:
        event: Event = parse(arg)
    except InvalidEvent as exc:
        assert exc.reason
        return None
    assert isinstance(event, ALL_MODELS)
    return event


@settings(max_examples=400, deadline=None)
@given(json_values | mutated_events())
def test_any_json_value_parses_or_raises_invalid_event(data: Any) -> None:
    from_dict = outcome(event_from_dict, data)
    assert outcome(parse_event, orjson.dumps(data)) == from_dict


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40) | st.text(max_size=40))
def test_arbitrary_bytes_parse_or_raise_invalid_event(message: bytes | str) -> None:
    outcome(parse_event, message)


# --- the worker's clock: future and too-old events -------------------------------

SECOND = 1_000_000
SKEW, HORIZON = 300 * SECOND, 7 * 24 * 3600 * SECOND


def time_refusal(kind: str, moment: int, now: int, **changes: Any) -> str | None:
    """The kind of ``check_time``'s refusal of a ``kind`` event dated ``moment``."""
    stamp = format_timestamp(moment)
    name = "as_of" if kind.startswith("erp.") else "occurred_at"
    event = parse_event(raw(body(kind, **{name: stamp, **changes})))
    try:
        check_time(event, now, SKEW, HORIZON)
    except InvalidEvent as exc:
        assert exc.event_id == "e1" and exc.sku == "SKU-1"
        return exc.kind
    return None


@pytest.mark.parametrize("kind", list(VALID))
def test_every_event_dated_beyond_the_skew_is_refused_as_future(kind: str) -> None:
    assert time_refusal(kind, US1 + SKEW, US1) is None
    assert time_refusal(kind, US1 + SKEW + 1, US1) == "future_timestamp"


@pytest.mark.parametrize(
    ("kind", "changes", "window"),
    [
        ("transfer.shipped", {}, HORIZON),
        ("transfer.received", {}, HORIZON),
        ("reservation.created", {}, HORIZON),
        ("reservation.released", {}, HORIZON),
        ("reservation.fulfilled", {}, HORIZON),
        ("pos.return", {"disposition": "damaged"}, HORIZON),
        ("erp.baseline_reset", {}, SKEW),
        ("erp.balance", {}, None),
        ("pos.sale", {}, None),
        ("pos.return", {"disposition": "sellable"}, None),
    ],
)
def test_events_whose_repeat_the_state_may_not_recognise_are_refused_when_too_old(
    kind: str, changes: dict[str, Any], window: int | None
) -> None:
    now = US2
    if window is None:  # never too old: a baseline contains these, whenever
        assert time_refusal(kind, 0, now, **changes) is None
        return
    assert time_refusal(kind, now - window, now, **changes) is None
    assert time_refusal(kind, now - window - 1, now, **changes) == "too_old"


def test_time_refusals_name_the_field_and_both_times() -> None:
    event = parse_event(raw(body("pos.sale", occurred_at="2026-11-22T13:00:00Z")))
    with pytest.raises(InvalidEvent) as refused:
        check_time(event, US2, SKEW, HORIZON)
    assert refused.value.reason == (
        "timestamp in the future: occurred_at 2026-11-22T13:00:00Z is more than 300 s after"
        " the worker's clock (2026-11-22T12:00:00Z)"
    )


@pytest.mark.parametrize("kind", list(VALID))
def test_the_canonical_form_reads_back_as_the_same_event(kind: str) -> None:
    event = parse_event(raw(body(kind, extra="x" * 100_000)))
    assert parse_event(orjson.dumps(event_to_dict(event))) == event
