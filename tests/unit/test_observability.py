"""Logs and metrics: the JSON log line, bounded dead-letter reasons, batch histograms."""

from __future__ import annotations

import logging
import sys

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from availability.events import INVALID_KINDS, InvalidEvent, parse_event
from infra.config import Settings
from infra.logs import JsonFormatter, logging_config
from streams.metrics import LATENCY_BUCKETS, BatchHistogram


def record(message: str, **extra: object) -> logging.LogRecord:
    entry = logging.LogRecord("streams.app", logging.WARNING, __file__, 1, message, (), None)
    entry.__dict__.update(extra)
    return entry


def test_a_json_log_line_carries_the_event_context() -> None:
    line = orjson.loads(
        JsonFormatter().format(
            record("dead letter: %s", event_id="e-1", sku="SKU-1", topic="pos", other="x")
        )
    )
    assert line["message"] == "dead letter: %s"
    assert line["level"] == "warning"
    assert line["logger"] == "streams.app"
    assert line["event_id"] == "e-1"
    assert line["sku"] == "SKU-1"
    assert line["topic"] == "pos"
    assert "other" not in line
    assert line["ts"].endswith("Z")


def test_a_json_log_line_holds_the_traceback_on_one_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        entry = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "failed %d", (3,), sys.exc_info()
        )
    text = JsonFormatter().format(entry)
    assert "\n" not in text
    line = orjson.loads(text)
    assert line["message"] == "failed 3"
    assert "RuntimeError: boom" in line["exc"]


def test_the_log_format_is_chosen_by_the_settings() -> None:
    assert logging_config(Settings(log_format="json"))["formatters"]["default"] == {
        "()": JsonFormatter
    }
    text = logging_config(Settings(log_format="text", log_level="warning"))
    assert "format" in text["formatters"]["default"]
    assert text["root"]["level"] == "WARNING"


SALE = {
    "event_id": "e",
    "type": "pos.sale",
    "sku": "S",
    "location_id": "L",
    "quantity": 1,
    "occurred_at": "2026-11-22T10:00:00Z",
}


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (None, "empty_message"),
        (b"{x", "malformed_json"),
        (b"[]", "not_an_object"),
        (orjson.dumps({k: v for k, v in SALE.items() if k != "location_id"}), "missing_field"),
        (orjson.dumps({**SALE, "type": "pos.teleport"}), "unknown_type"),
        (orjson.dumps({**SALE, "quantity": 0}), "invalid_field"),
        (orjson.dumps({**SALE, "sku": "bad sku"}), "invalid_field"),
        (orjson.dumps({**SALE, "occurred_at": "soon"}), "invalid_field"),
        (orjson.dumps({**SALE, "event_id": ""}), "invalid_field"),
    ],
)
def test_every_refusal_has_a_bounded_kind(raw: bytes | None, kind: str) -> None:
    with pytest.raises(InvalidEvent) as refused:
        parse_event(raw)
    assert refused.value.kind == kind
    assert kind in INVALID_KINDS


@given(
    st.lists(
        st.one_of(
            st.floats(min_value=-1.0, max_value=1000.0, allow_nan=False),
            st.sampled_from(LATENCY_BUCKETS),
        ),
        max_size=60,
    ),
    st.integers(min_value=1, max_value=4),
)
def test_a_batch_histogram_counts_as_prometheus_does(values: list[float], batches: int) -> None:
    reference_registry = CollectorRegistry()
    reference = Histogram(
        "fold", "d", ["since"], buckets=LATENCY_BUCKETS, registry=reference_registry
    )
    ours = BatchHistogram("fold", "d", "since")
    ours_registry = CollectorRegistry()
    ours_registry.register(ours)
    for value in values:
        reference.labels("event_time").observe(value)
    size = max(1, len(values) // batches)
    for start in range(0, len(values), size):
        ours.observe("event_time", values[start : start + size])
    if not values:
        return
    expected = _samples(generate_latest(reference_registry))
    got = _samples(generate_latest(ours_registry))
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value), name


def _samples(text: bytes) -> dict[str, float]:
    samples = {}
    for line in text.decode().splitlines():
        if line.startswith("#") or "_created" in line:
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples
