"""``drift``: compare a full ERP balance export with the service's on-hand
(``availability.drift``), print the report, and publish its counts for Prometheus.

The service's on-hand comes from the stream processor's own durable state (the
table's journal in Kafka, ``availability.journal``), not from Redis: the check is
right even while the serving layer is being rebuilt, and it knows when each on-hand
change happened, which is what tells "events after as_of" from real drift.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from availability.drift import CAUSES, DriftReport, ExportFormatError, compare, read_export
from availability.journal import CorruptEntry, restore
from availability.state import SkuState
from infra.config import Settings
from infra.kafka import read_topic
from infra.store import AvailabilityStore
from services.cli.text import table

Say = Callable[[str], None]
#: Differences printed in the table (all of them are in --json and --output).
TABLE_ROWS = 50


def export_format(path: Path, given: str | None) -> str:
    if given is not None:
        return given
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise ExportFormatError(
        f"cannot tell the format of {path.name!r} from its name: give --format csv or jsonl"
    )


def read_export_file(path: Path, given_format: str | None) -> tuple[str, str]:
    kind = export_format(path, given_format)
    try:
        return path.read_text(encoding="utf-8"), kind
    except FileNotFoundError:
        raise ExportFormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ExportFormatError(f"{path}: is a directory") from None
    except UnicodeDecodeError as exc:
        raise ExportFormatError(f"{path}: not UTF-8 text ({exc})") from None


async def load_states(settings: Settings, say: Say) -> dict[str, SkuState]:
    """Every SKU's state, folded back from the stream processor's journal."""
    topic = settings.state_journal_topic
    say(f"reading the service's state from {topic} ...")
    started = time.monotonic()
    records = await read_topic(settings, topic, timeout=1800.0)
    # Folded as the workers fold it: baselines older than the skew are settled.
    settle_before = time.time_ns() // 1000 - int(settings.max_future_skew * 1_000_000)
    states: dict[str, SkuState] = {}
    corrupt = 0
    for record in records:
        try:
            if record.key is None:
                raise CorruptEntry("an entry without a key")
            restore(states, record.key.decode(), record.value, settle_before=settle_before)
        except (CorruptEntry, UnicodeDecodeError):
            corrupt += 1
    say(
        f"{len(records)} journal entries, {len(states)} SKUs in {time.monotonic() - started:.1f} s"
        + (f"; {corrupt} unreadable entries skipped" if corrupt else "")
    )
    return states


def report_lines(report: DriftReport) -> list[str]:
    lines = []
    shown = report.differences[:TABLE_ROWS]
    if shown:
        header = ("SKU", "LOCATION", "ERP", "SERVICE", "DIFF", "CAUSE", "DETAIL")
        rows = [header] + [
            (
                d.sku,
                d.location_id,
                "-" if d.erp_on_hand is None else str(d.erp_on_hand),
                "-" if d.service_on_hand is None else str(d.service_on_hand),
                f"{d.difference:+d}",
                d.cause,
                d.detail,
            )
            for d in shown
        ]
        lines.append(table(rows))
        if len(report.differences) > len(shown):
            lines.append(f"... {len(report.differences) - len(shown)} more (--json for all)")
    for error in report.line_errors:
        lines.append(f"line {error.line}: {error.message}")
    counts = report.by_cause()
    summary = ", ".join(f"{counts[c]} {c}" for c in CAUSES if counts[c])
    lines.append(
        f"{report.rows} rows checked, threshold {report.threshold}: {report.drifted} drifted"
        f" SKU-locations ({summary or 'no difference'}); {len(report.line_errors)} bad lines"
    )
    return lines


async def drift(
    settings: Settings,
    path: Path,
    *,
    given_format: str | None,
    threshold: int,
    as_json: bool,
    output: Path | None,
    publish: bool,
    say: Say,
) -> int:
    """Exit code: 0 no drift and every line read, 1 drift or bad lines; an unusable
    file raises ExportFormatError (exit 2)."""
    text, kind = read_export_file(path, given_format)
    rows, errors = read_export(text, kind)
    progress = say if not as_json else (lambda _: None)
    progress(f"{path}: {len(rows)} rows, {len(errors)} bad lines")
    states = await load_states(settings, progress)
    report = compare(states, rows, threshold)
    report.line_errors = errors
    document = report.as_json()
    if output is not None:
        output.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
        progress(f"report written to {output}")
    if as_json:
        say(orjson.dumps(document).decode())
    else:
        for line in report_lines(report):
            say(line)
    if publish:
        store = AvailabilityStore.for_settings(settings)
        try:
            await store.save_drift(report.by_cause(), rows=report.rows, bad_lines=len(errors))
        finally:
            await store.close()
    return 1 if report.drifted or errors else 0


async def drift_job(settings: Settings, say: Say) -> int:
    """Run ``drift`` on ``AVAILABILITY_DRIFT_EXPORT`` every ``AVAILABILITY_DRIFT_INTERVAL``
    seconds (0, the default: off). A failed check is reported and retried next time."""
    if settings.drift_interval <= 0:
        say("the drift job is off (AVAILABILITY_DRIFT_INTERVAL=0)")
        return 0
    if not settings.drift_export:
        raise ExportFormatError("AVAILABILITY_DRIFT_EXPORT names no export file")
    path = Path(settings.drift_export)
    while True:
        try:
            await drift(
                settings,
                path,
                given_format=None,
                threshold=settings.drift_threshold,
                as_json=False,
                output=None,
                publish=True,
                say=say,
            )
        except Exception as exc:  # the job goes on; the next run may find the file
            say(f"drift check failed: {exc}")
        await asyncio.sleep(settings.drift_interval)
