"""The worker's bounded state, baseline resets and bounded reads of skipped ranges,
with a real broker, Redis, worker and operator CLI."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from availability.ats import view
from infra.config import Settings
from infra.kafka import RangeReader, read_topic
from infra.store import AvailabilityStore
from tests.integration.conftest import StartService
from tests.integration.scenario import stamp
from tests.integration.support import consume_all, produce
from tests.integration.test_operations import metric_samples, run_cli


async def figures(store: AvailabilityStore, sku: str) -> dict[str, Any] | None:
    stored = await store.read_availability(sku)
    return None if stored is None else view(stored, "online")


async def until_figures(
    store: AvailabilityStore, sku: str, check: Any, timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        got = await figures(store, sku)
        if got is not None and check(got):
            return got
        assert time.monotonic() < deadline, got
        await asyncio.sleep(0.2)


def at(got: dict[str, Any], location: str) -> dict[str, Any]:
    return next(loc for loc in got["locations"] if loc["location_id"] == location)


async def worker_metrics(settings: Settings) -> dict[str, float]:
    url = f"http://127.0.0.1:{settings.worker_metrics_port}/metrics"
    async with httpx.AsyncClient(timeout=5) as client:
        return metric_samples((await client.get(url)).text)


async def until_metric(settings: Settings, name: str, at_least: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if (await worker_metrics(settings)).get(name, 0) >= at_least:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, name
        await asyncio.sleep(0.5)


def journal_keys(records: list[Any]) -> set[str]:
    """The keys a compaction of the journal keeps (a key's last value, not deleted)."""
    latest: dict[str, bytes | None] = {}
    for record in records:
        latest[record.key.decode()] = record.value
    return {key for key, value in latest.items() if value is not None}


async def test_old_lines_and_ids_leave_the_state_and_a_late_duplicate_changes_nothing(
    settings: Settings, start_service: StartService
) -> None:
    horizon = 12.0
    own = settings.model_copy(update={"state_horizon": horizon})
    worker = start_service("streams", own, name="worker")
    store = AvailabilityStore.from_url(settings.redis_url, settings.redis_key_prefix)
    try:
        sku = {"sku": "H-1"}
        ready = {**sku, "event_id": "b", "type": "erp.balance", "location_id": "S1",
                 "on_hand": 50, "as_of": stamp(datetime.now(UTC) - timedelta(hours=1))}  # fmt: skip
        await produce(settings, settings.erp_topic, [ready])
        await until_figures(store, "H-1", lambda got: got["ats"] == 50, timeout=90)
        # Dated now: within the horizon when the worker folds them.
        now = stamp(datetime.now(UTC))
        line = {**sku, "reservation_id": "R1", "location_id": "S1", "occurred_at": now}
        events = {
            "reservations": [
                {**line, "event_id": "r1c", "type": "reservation.created", "quantity": 3},
                {**line, "event_id": "r1x", "type": "reservation.released"},
                {**line, "event_id": "r2c", "type": "reservation.created", "quantity": 2,
                 "reservation_id": "R2"},
            ],
            "transfers": [
                {**sku, "event_id": "t1", "type": "transfer.shipped", "transfer_id": "T1",
                 "from_location": "W1", "to_location": "S1", "quantity": 5, "occurred_at": now},
            ],
            "pos": [
                {**sku, "event_id": "d1", "type": "pos.return", "location_id": "S1",
                 "quantity": 1, "disposition": "damaged", "occurred_at": now},
            ],
        }  # fmt: skip
        topics = {
            "reservations": settings.reservations_topic,
            "transfers": settings.transfers_topic,
            "pos": settings.pos_topic,
        }
        for name, batch in events.items():
            await produce(settings, topics[name], batch)

        def complete(got: dict[str, Any]) -> bool:
            s1, w1 = at(got, "S1"), at(got, "W1") if len(got["locations"]) > 1 else {}
            return (s1["reserved"], s1["in_transit"], s1["damaged"], w1.get("on_hand")) == (
                2,
                5,
                1,
                -5,
            )

        before = await until_figures(store, "H-1", complete, timeout=30)

        # Past the horizon the idle worker prunes: R1, the transfer's id and the
        # damaged return leave the state and the journal; R2 is open and stays. (The
        # transfer's entry stays: W1 has no ERP balance containing its on-hand part.)
        deadline = time.monotonic() + horizon + 30
        while True:
            records = await read_topic(settings, own.state_journal_topic)
            if journal_keys(records) == {"H-1", "H-1 r2c", "H-1 t1"}:
                break
            assert time.monotonic() < deadline, journal_keys(records)
            await asyncio.sleep(1.0)
        pruned = await worker_metrics(own)
        assert pruned["availability_worker_states_pruned_total"] >= 1
        # Every event again, as a late redelivery: refused as too old, no change.
        for name, batch in events.items():
            await produce(settings, topics[name], batch)
        deadline = time.monotonic() + 30
        while True:
            samples = await worker_metrics(own)
            refused = sum(
                value
                for key, value in samples.items()
                if key.startswith("availability_worker_dead_letters_total{")
                and 'reason="too_old"' in key
            )
            if refused == 5:
                break
            assert time.monotonic() < deadline, samples
            await asyncio.sleep(0.5)
        assert await figures(store, "H-1") == before

        # A restart folds the pruned journal back: the same figures.
        worker.terminate()
        await store.client.delete(store.sku_key("H-1"))
        worker.start()
        assert await until_figures(store, "H-1", lambda got: True, timeout=120) == before
    finally:
        await store.close()


async def test_an_operator_resets_a_baseline_dated_in_the_future(
    settings: Settings, start_service: StartService
) -> None:
    start_service("streams", settings, name="worker")
    store = AvailabilityStore.from_url(settings.redis_url, settings.redis_key_prefix)
    try:
        now = datetime.now(UTC)
        sku = {"sku": "B-1", "location_id": "S1"}
        # Four minutes ahead: within the skew, so accepted, and it hides every sale.
        ahead = {**sku, "event_id": "b-ahead", "type": "erp.balance", "on_hand": 100,
                 "as_of": stamp(now + timedelta(minutes=4))}  # fmt: skip
        sales = [
            {
                **sku,
                "event_id": f"s{n}",
                "type": "pos.sale",
                "quantity": 2,
                "occurred_at": stamp(now - timedelta(seconds=10 - n)),
            }
            for n in range(3)
        ]
        far = {**ahead, "event_id": "b-far", "as_of": stamp(now + timedelta(days=365))}
        await produce(settings, settings.erp_topic, [ahead, far])
        await produce(settings, settings.pos_topic, sales)
        await until_figures(store, "B-1", lambda got: at(got, "S1")["on_hand"] == 100, 90)
        # The balance a year ahead never counted: refused as future-dated.
        await until_metric(
            settings,
            f'availability_worker_dead_letters_total{{reason="future_timestamp",'
            f'topic="{settings.erp_topic}"}}',
            1,
            10,
        )

        shown = run_cli(settings, "baseline", "show", "--sku", "B-1", "--location", "S1")
        assert shown.returncode == 0, shown.stderr
        assert "BASELINE  b-ahead  100" in shown.stdout and "(future)" in shown.stdout

        reset = run_cli(
            settings, "baseline", "reset", "--sku", "B-1", "--location", "S1",
            "--on-hand", "40",
        )  # fmt: skip
        assert reset.returncode == 0, reset.stderr
        # The operator is the verified subject of AVAILABILITY_TOKEN (the tests' key).
        assert "voiding b-ahead" in reset.stdout and "(operator tests)" in reset.stdout
        # The count is as of the reset: the sales before it are in it.
        await until_figures(store, "B-1", lambda got: at(got, "S1")["on_hand"] == 40, 30)
        # A sale after the reset counts; the voided balance, delivered again, does not.
        later = {**sku, "event_id": "s-late", "type": "pos.sale", "quantity": 1,
                 "occurred_at": stamp(datetime.now(UTC))}  # fmt: skip
        await produce(settings, settings.pos_topic, [later])
        await produce(settings, settings.erp_topic, [ahead])
        await until_figures(store, "B-1", lambda got: at(got, "S1")["on_hand"] == 39, 30)
        await asyncio.sleep(2)
        assert at(await figures(store, "B-1") or {}, "S1")["on_hand"] == 39

        published = [
            orjson.loads(r.value)
            for r in await consume_all(settings, settings.erp_topic)
            if r.value and b"baseline_reset" in r.value
        ]
        assert [(e["operator"], e["voids"], e["on_hand"]) for e in published] == [
            ("tests", ["b-ahead"], 40)
        ]
        audit = [orjson.loads(r.value) for r in await read_topic(
            settings, settings.audit_topic)]  # fmt: skip
        assert [(a["action"], a["actor"]["subject"], a["resource"]) for a in audit] == [
            ("baseline.reset", "tests", "baseline:B-1@S1")
        ]
        after = run_cli(settings, "baseline", "show", "--sku", "B-1", "--json")
        assert after.returncode == 0, after.stderr
        state = orjson.loads(after.stdout.strip().splitlines()[-1])["locations"]["S1"]
        assert state["baseline"]["event_id"] == published[0]["event_id"]
        assert state["voided"] == ["b-ahead"]
        assert state["on_hand"] == 39
    finally:
        await store.close()


async def test_a_skipped_range_is_read_in_bounded_pieces(settings: Settings) -> None:
    values = [orjson.dumps({"n": n, "pad": "x" * 100}) for n in range(250)]
    # One record a batch: the development broker's end offsets are exact then.
    await produce(settings, settings.pos_topic, values, key="K", partition=1)
    reader = RangeReader(settings, "tests-gaps")
    try:
        pieces = []
        position, end = 10, 240
        while position < end:
            piece = await reader.read(
                settings.pos_topic, 1, position, end, max_records=100, max_bytes=10**6, timeout=30
            )
            assert piece.lost == 0
            pieces.append([r.offset for r in piece.records])
            position = piece.next_offset
        assert [len(p) for p in pieces] == [100, 100, 30]
        assert [offset for piece in pieces for offset in piece] == list(range(10, 240))
        by_bytes = await reader.read(
            settings.pos_topic, 1, 0, 250, max_records=1000, max_bytes=1000, timeout=30
        )
        assert 1 <= len(by_bytes.records) <= 10 and by_bytes.next_offset == len(by_bytes.records)
        with pytest.raises(TimeoutError):
            await reader.read(
                settings.pos_topic, 1, 0, 250, max_records=10, max_bytes=10**6, timeout=1e-6
            )
    finally:
        await reader.close()
