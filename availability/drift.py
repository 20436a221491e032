"""Drift between the service's on-hand and a full ERP balance export.

An export row says: at ``as_of``, the ERP counted ``on_hand`` units of ``sku`` at
``location_id``. The service's on-hand is its latest ERP balance plus every on-hand
change since (sales, returns, transfers, fulfilments). Where the two differ by more
than a threshold, the likely cause is named, first match wins:

- ``missing_location``: the service has no state for the SKU at that location: the
  ERP balance event (and every other event there) never reached it.
- ``export_older``: the service holds an ERP balance newer than the export's
  ``as_of``; the export is stale for this row.
- ``events_after_as_of``: the service's on-hand *as of the export's as_of* equals
  the ERP's; the difference is events after ``as_of`` that the export does not
  contain yet. Expected in an export taken while stock moves: not counted as drift.
- ``negative_stock``: the service's on-hand is below zero: it applied sales beyond
  the stock it knew of (a receipt, a transfer or an ERP balance is missing).
- ``unexplained``: none of the above: events lost, or ERP adjustments that were never
  published as events.

SKU-locations the service holds but the export lacks are reported as
``not_in_export`` when the service's on-hand there is beyond the threshold.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from availability.display import preview
from availability.identifiers import is_location, is_sku, parse_timestamp
from availability.state import SkuState

CAUSES = (
    "missing_location",
    "export_older",
    "events_after_as_of",
    "negative_stock",
    "unexplained",
    "not_in_export",
)
#: Causes that are no fault: the gauge and the exit code leave them out.
EXPLAINED = frozenset({"events_after_as_of"})
FIELDS = ("sku", "location_id", "on_hand", "as_of")


@dataclass(frozen=True, slots=True)
class ExportRow:
    line: int
    sku: str
    location_id: str
    on_hand: int
    as_of: int  # µs


@dataclass(frozen=True, slots=True)
class LineError:
    line: int
    message: str


@dataclass(frozen=True, slots=True)
class Difference:
    sku: str
    location_id: str
    erp_on_hand: int | None  # None: not in the export
    service_on_hand: int | None  # None: the service has no state there
    cause: str
    detail: str
    line: int | None = None

    @property
    def difference(self) -> int:
        return (self.service_on_hand or 0) - (self.erp_on_hand or 0)

    def as_json(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "location_id": self.location_id,
            "erp_on_hand": self.erp_on_hand,
            "service_on_hand": self.service_on_hand,
            "difference": self.difference,
            "cause": self.cause,
            "detail": self.detail,
            "line": self.line,
        }


@dataclass
class DriftReport:
    rows: int = 0
    threshold: int = 0
    differences: list[Difference] = field(default_factory=list)
    line_errors: list[LineError] = field(default_factory=list)

    def by_cause(self) -> dict[str, int]:
        counts = dict.fromkeys(CAUSES, 0)
        for difference in self.differences:
            counts[difference.cause] += 1
        return counts

    @property
    def drifted(self) -> int:
        """SKU-locations that differ for a cause other than events not yet exported."""
        return sum(1 for d in self.differences if d.cause not in EXPLAINED)

    def as_json(self) -> dict[str, Any]:
        return {
            "rows_checked": self.rows,
            "threshold": self.threshold,
            "drifted": self.drifted,
            "by_cause": self.by_cause(),
            "differences": [d.as_json() for d in self.differences],
            "line_errors": [{"line": e.line, "message": e.message} for e in self.line_errors],
        }


class ExportFormatError(ValueError):
    """The export cannot be read at all (not a line of it is usable)."""


def read_export(text: str, kind: str) -> tuple[list[ExportRow], list[LineError]]:
    """Rows of a CSV (with a header naming at least ``sku,location_id,on_hand,as_of``)
    or JSON-lines export; a malformed line is a ``LineError`` and the rest is read.
    A repeated (sku, location_id) is an error on its later line."""
    if kind == "csv":
        records = _csv_records(text)
    elif kind == "jsonl":
        records = _jsonl_records(text)
    else:
        raise ExportFormatError(f"unknown export format {preview(kind)} (csv or jsonl)")
    rows: list[ExportRow] = []
    errors: list[LineError] = []
    first_seen: dict[tuple[str, str], int] = {}
    for line, record in records:
        if isinstance(record, str):
            errors.append(LineError(line, record))
            continue
        try:
            row = _row(line, record)
        except ValueError as exc:
            errors.append(LineError(line, str(exc)))
            continue
        key = (row.sku, row.location_id)
        if key in first_seen:
            errors.append(
                LineError(
                    line, f"{row.sku} at {row.location_id} again (first on line {first_seen[key]})"
                )
            )
            continue
        first_seen[key] = line
        rows.append(row)
    return rows, errors


def _csv_records(text: str) -> Iterator[tuple[int, Mapping[str, Any] | str]]:
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    for values in reader:
        line = reader.line_num
        if header is None:
            if not values or all(not v.strip() for v in values):
                continue
            header = [v.strip() for v in values]
            missing = [name for name in FIELDS if name not in header]
            if missing:
                raise ExportFormatError(
                    f"line {line}: the CSV header lacks {', '.join(missing)}"
                    f" (it needs {','.join(FIELDS)})"
                )
            continue
        if not values or all(not v.strip() for v in values):
            continue
        if len(values) != len(header):
            yield line, f"{len(values)} values, the header names {len(header)}"
            continue
        yield line, dict(zip(header, (v.strip() for v in values), strict=True))
    if header is None:
        raise ExportFormatError("the export is empty (no CSV header)")


def _jsonl_records(text: str) -> Iterator[tuple[int, Mapping[str, Any] | str]]:
    any_line = False
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        any_line = True
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            yield line, f"not valid JSON: {exc}"
            continue
        if not isinstance(value, dict):
            yield line, "not a JSON object"
            continue
        yield line, value
    if not any_line:
        raise ExportFormatError("the export is empty")


def _row(line: int, record: Mapping[str, Any]) -> ExportRow:
    missing = [name for name in FIELDS if record.get(name) in (None, "")]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    sku, location_id = record["sku"], record["location_id"]
    if not isinstance(sku, str) or not is_sku(sku):
        raise ValueError(f"sku {preview(sku)} is not a valid SKU")
    if not isinstance(location_id, str) or not is_location(location_id):
        raise ValueError(f"location_id {preview(location_id)} is not a valid location id")
    on_hand = record["on_hand"]
    if isinstance(on_hand, str) and on_hand.lstrip("-").isdigit():
        on_hand = int(on_hand)
    if not isinstance(on_hand, int) or isinstance(on_hand, bool):
        raise ValueError(f"on_hand {preview(record['on_hand'])} is not a whole number")
    as_of = record["as_of"]
    try:
        as_of_micros = parse_timestamp(as_of) if isinstance(as_of, str) else None
    except ValueError:
        as_of_micros = None
    if as_of_micros is None:
        raise ValueError(f"as_of {preview(as_of)} is not an RFC 3339 timestamp")
    return ExportRow(line, sku, location_id, on_hand, as_of_micros)


def on_hand_as_of(state: SkuState, location_id: str, moment: int) -> int | None:
    """The service's on-hand at ``moment``, or None when its ERP balance is newer, or
    the events up to a newer one are forgotten (the balance before it is not kept)."""
    baseline = state.baselines.get(location_id)
    if (baseline is not None and baseline.as_of > moment) or state.cut(location_id) > moment:
        return None
    total = 0 if baseline is None else baseline.on_hand
    for occurred_at, quantity, _ in state.deltas.get(location_id, {}).values():
        if state.floor(location_id) < occurred_at <= moment:
            total += quantity
    return total


def compare(
    states: Mapping[str, SkuState], rows: Iterable[ExportRow], threshold: int = 0
) -> DriftReport:
    report = DriftReport(threshold=threshold)
    exported: set[tuple[str, str]] = set()
    for row in rows:
        report.rows += 1
        exported.add((row.sku, row.location_id))
        state = states.get(row.sku)
        known = state is not None and row.location_id in state.locations()
        service = state.on_hand(row.location_id) if state is not None and known else None
        if service is not None and abs(service - row.on_hand) <= threshold:
            continue
        if state is None or service is None:
            report.differences.append(
                Difference(
                    row.sku,
                    row.location_id,
                    row.on_hand,
                    None,
                    "missing_location",
                    "the service has no state for this SKU here",
                    row.line,
                )
            )
            continue
        report.differences.append(_explain(state, row, service, threshold))
    for sku, state in states.items():
        for location_id in state.locations():
            if (sku, location_id) in exported:
                continue
            service = state.on_hand(location_id)
            if abs(service) > threshold:
                report.differences.append(
                    Difference(
                        sku,
                        location_id,
                        None,
                        service,
                        "not_in_export",
                        "the service holds stock here that the export does not list",
                    )
                )
    report.differences.sort(key=lambda d: (d.sku, d.location_id))
    return report


def _explain(state: SkuState, row: ExportRow, service: int, threshold: int) -> Difference:
    def difference(cause: str, detail: str) -> Difference:
        return Difference(row.sku, row.location_id, row.on_hand, service, cause, detail, row.line)

    baseline = state.baselines.get(row.location_id)
    then = on_hand_as_of(state, row.location_id, row.as_of)
    if then is None and baseline is not None:
        return difference(
            "export_older",
            f"the service's ERP balance ({baseline.on_hand} as of"
            f" {_when(baseline.as_of)}) is newer than the export's",
        )
    if then is not None and abs(then - row.on_hand) <= threshold:
        later = [
            quantity
            for occurred_at, quantity, _ in state.deltas.get(row.location_id, {}).values()
            if occurred_at > row.as_of
        ]
        return difference(
            "events_after_as_of",
            f"{len(later)} event(s) after as_of, net {sum(later):+d}, not in the export yet",
        )
    if service < 0:
        return difference("negative_stock", "the service applied more sales than stock it knew")
    return difference(
        "unexplained",
        f"as of the export's as_of the service had {then}"
        if then is not None
        else "no figure as of the export's as_of",
    )


def _when(micros: int) -> str:
    return (
        datetime.fromtimestamp(micros / 1e6, UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )
