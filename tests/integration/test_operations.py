"""Operations: faults and the operator's commands, with real broker, Redis and
worker processes (README "Operations")."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from dev.broker import DevBroker
from dev.processes import process_env, stop_process
from dev.redis_server import ensure_redis
from infra.config import Settings
from infra.kafka import read_topic, topic_problems
from infra.store import AvailabilityStore
from infra.topics import create_topics
from services.cli.dead_letters import DeadLetter, parse_dead_letter
from tests.integration.conftest import StartService, make_settings
from tests.integration.scenario import mixed_stream
from tests.integration.support import free_port, produce
from tests.integration.test_stream_processor import (
    answers,
    now_micros,
    publish,
    start_stack,
    until_equal,
)
from tests.reference import recompute

ROOT = Path(__file__).resolve().parents[2]


def run_cli(
    settings: Settings, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=process_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def drop_serving_keys(settings: Settings) -> int:
    """What FLUSHALL does to this deployment, without touching other tests' keys."""
    store = AvailabilityStore.for_settings(settings)  # a cluster's scan covers every master
    try:
        keys = [k async for k in store.client.scan_iter(match=f"{store.prefix}:*", count=1000)]
        if keys:
            await store.client.delete(*keys)
        return len(keys)
    finally:
        await store.close()


async def reads_until_rebuilt(
    client: httpx.AsyncClient, expected: dict[str, Any], timeout: float
) -> set[int]:
    """Read everything until the answers are the expected ones again. Meanwhile an
    answer is either the whole expected figure or 503: never a half-built one.
    Returns the statuses seen."""
    skus = sorted(expected)
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        complete = True
        for start in range(0, len(skus), 100):
            chunk = skus[start : start + 100]
            response = await client.post("/v1/availability:batch", json={"skus": chunk})
            seen.add(response.status_code)
            if response.status_code == 503:
                assert response.json()["error"]["code"] == "unavailable"
                complete = False
                continue
            assert response.status_code == 200, response.text
            for item in response.json()["items"]:
                assert item == expected[item["sku"]], item
        single = await client.get(f"/v1/availability/{skus[0]}")
        seen.add(single.status_code)
        assert single.status_code in (200, 503), single.text
        if single.status_code == 200:
            assert single.json() == expected[skus[0]]
        ready = await client.get("/readyz")
        if complete and single.status_code == 200 and ready.status_code == 200:
            return seen
        assert time.monotonic() < deadline, f"not rebuilt within {timeout} s: {ready.text}"
        await asyncio.sleep(0.05)


async def test_serving_layer_lost_is_rebuilt_and_the_cli_forces_a_rebuild(
    settings: Settings, start_service: StartService
) -> None:
    distinct, deliveries = mixed_stream(seed=31, skus=60, events_per_sku=8)
    client = await start_stack(start_service, settings)
    async with client:
        await publish(settings, deliveries)
        expected = recompute(distinct, now_micros())
        await until_equal(client, expected, timeout=60)

        assert await drop_serving_keys(settings) > len(expected)
        after_loss = await client.get("/readyz")
        assert after_loss.status_code == 503
        assert after_loss.json()["checks"]["serving"] != "ok"
        await reads_until_rebuilt(client, expected, timeout=30)
        assert await answers(client, sorted(expected)) == expected

        done = run_cli(settings, "rebuild", "--timeout", "60")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "rebuild requested (1 worker(s) reporting)" in done.stdout
        assert done.stdout.rstrip().endswith("serving layer complete")
        audit = await read_topic(settings, settings.audit_topic)
        assert [orjson.loads(r.value)["action"] for r in audit] == ["serving.rebuild"]
        await until_equal(client, expected, timeout=10)
    worker_log = start_service.handles[0].log_text()
    assert worker_log.count("serving layer: partitions") >= 3, worker_log[-3000:]


async def test_a_restarted_empty_redis_is_rebuilt(
    dev_broker: DevBroker, start_service: StartService, tmp_path: Path
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    redis = ensure_redis(url, tmp_path / "redis")
    assert redis is not None, "a Redis of this test's own"
    settings = make_settings(dev_broker.url, url, tmp_path / "data")
    await create_topics(settings)
    distinct, deliveries = mixed_stream(seed=37, skus=60, events_per_sku=8)
    try:
        client = await start_stack(start_service, settings)
        async with client:
            await publish(settings, deliveries[: len(deliveries) // 2])
            redis.send_signal(signal.SIGKILL)
            redis.wait(10)
            # Events go on arriving while Redis is away; reads fail with 503.
            await publish(settings, deliveries[len(deliveries) // 2 :])
            down = await client.get("/readyz")
            assert down.status_code == 503
            assert "Redis" in down.json()["checks"]["redis"]
            await asyncio.sleep(2.0)

            redis = ensure_redis(url, tmp_path / "redis")
            assert redis is not None
            expected = recompute(distinct, now_micros())
            statuses = await reads_until_rebuilt(client, expected, timeout=60)
            assert 200 in statuses
            for handle in start_service.handles:
                assert handle.running, handle.tail()
    finally:
        if redis is not None:
            stop_process(redis, 5.0)


async def test_dead_letters_are_listed_and_replayed_once(
    settings: Settings, start_service: StartService
) -> None:
    balance = {
        "event_id": "b1",
        "type": "erp.balance",
        "sku": "SKU-D",
        "location_id": "S1",
        "on_hand": 10,
        "as_of": "2026-11-22T09:00:00Z",
    }
    sale = {
        "event_id": "s1",
        "type": "pos.sale",
        "sku": "SKU-D",
        "quantity": 3,
        "occurred_at": "2026-11-22T10:00:00Z",
    }  # no location_id: the producer's bug
    refused = [orjson.dumps(sale), b"{not json", orjson.dumps({**sale, "event_id": "s2"})]
    client = await start_stack(start_service, settings)
    async with client:
        await produce(settings, settings.erp_topic, [balance])
        await produce(settings, settings.pos_topic, refused, key="SKU-D")
        await until_equal(client, recompute([balance], now_micros()), timeout=60)
        letters = await wait_for_dead_letters(settings, 3)

        listed = run_cli(settings, "dead-letters", "list")
        assert listed.returncode == 0, listed.stderr
        assert "3 of 3 dead letters match" in listed.stdout
        assert "missing required field 'location_id'" in listed.stdout
        assert "not valid JSON" in listed.stdout
        found = run_cli(settings, "dead-letters", "list", "--json", "--reason", "LOCATION_ID")
        rows = [orjson.loads(line) for line in found.stdout.splitlines()]
        assert [row["event_id"] for row in rows] == ["s1", "s2"]
        assert rows[0]["topic"] == settings.pos_topic
        assert orjson.loads(rows[0]["original"]) == sale
        assert rows[0]["replayed"] is None
        first = rows[0]["id"]
        assert first in letters

        unnamed = run_cli(settings, "dead-letters", "replay", "--reason", "location_id")
        assert unnamed.returncode == 2
        assert "--all-matching" in unnamed.stderr
        bad_patch = run_cli(settings, "dead-letters", "replay", "--id", first, "--patch", "[1]")
        assert bad_patch.returncode == 2
        assert "--patch must be a non-empty JSON object" in bad_patch.stderr

        patch = '{"location_id": "S1"}'
        dry = run_cli(
            settings, "dead-letters", "replay", "--id", first, "--patch", patch, "--dry-run"
        )
        assert dry.returncode == 0, dry.stdout
        assert "1 would be replayed" in dry.stdout
        replayed = run_cli(settings, "dead-letters", "replay", "--id", first, "--patch", patch)
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        assert "1 replayed, 0 already replayed (skipped), 0 refused" in replayed.stdout
        fixed = {**sale, "location_id": "S1"}
        expected = recompute([balance, fixed], now_micros())
        await until_equal(client, expected, timeout=30)

        again = run_cli(settings, "dead-letters", "replay", "--id", first, "--patch", patch)
        assert again.returncode == 0
        assert "0 replayed, 1 already replayed (skipped)" in again.stdout
        forced = run_cli(
            settings, "dead-letters", "replay", "--id", first, "--patch", patch, "--force"
        )
        assert forced.returncode == 0
        assert "1 replayed" in forced.stdout
        # The not-JSON one cannot take a patch; nothing is published for it.
        not_json = next(row for row in letters.values() if row.original == b"{not json")
        refused_run = run_cli(
            settings, "dead-letters", "replay", "--id", not_json.id, "--patch", patch
        )
        assert refused_run.returncode == 1
        assert "the original is not JSON" in refused_run.stdout
        # The forced replay arrived (a marker event after it shows up) and changed nothing.
        marker = {**balance, "event_id": "b2", "sku": "SKU-E"}
        await produce(settings, settings.erp_topic, [marker])
        expected = recompute([balance, fixed, marker], now_micros())
        await until_equal(client, expected, timeout=30)
        assert await answers(client, ["SKU-D"]) == {"SKU-D": expected["SKU-D"]}
        replayed_list = run_cli(settings, "dead-letters", "list", "--json", "--replayed")
        assert [orjson.loads(line)["id"] for line in replayed_list.stdout.splitlines()] == [first]
        ledger = await read_topic(settings, settings.dlq_replays_topic)
        assert [record.key for record in ledger] == [first.encode(), first.encode()]
        assert {orjson.loads(record.value)["operator"] for record in ledger} == {"tests"}
        audit = await read_topic(settings, settings.audit_topic)
        replays = [orjson.loads(r.value) for r in audit if r.key == f"dead_letter:{first}".encode()]
        assert [(r["action"], r["actor"]["subject"]) for r in replays] == [
            ("dead_letter.replay", "tests"),
            ("dead_letter.replay", "tests"),
        ]
        assert replays[0]["after"]["patched"] is True


async def wait_for_dead_letters(settings: Settings, count: int) -> dict[str, DeadLetter]:
    deadline = time.monotonic() + 30
    while True:
        records = await read_topic(settings, settings.dlq_topic, idle=0.5)
        if len(records) >= count:
            letters = [parse_dead_letter(r.partition, r.offset, r.key, r.value) for r in records]
            return {letter.id: letter for letter in letters}
        assert time.monotonic() < deadline, f"{len(records)} dead letters, not {count}"
        await asyncio.sleep(0.5)


async def test_the_worker_serves_its_metrics_and_logs_json(
    settings: Settings, start_service: StartService
) -> None:
    balances = [
        {
            "event_id": f"b{n}",
            "type": "erp.balance",
            "sku": f"SKU-{n}",
            "location_id": "S1",
            "on_hand": 5,
            "as_of": "2026-11-22T09:00:00Z",
        }
        for n in range(20)
    ]
    client = await start_stack(start_service, settings)
    async with client:
        no_location = {k: v for k, v in balances[0].items() if k != "location_id"}
        refused = [b"{not json", orjson.dumps({**no_location, "event_id": "x1"})]
        await produce(settings, settings.erp_topic, refused, key="SKU-0")
        await produce(settings, settings.erp_topic, balances)
        await until_equal(client, recompute(balances, now_micros()), timeout=60)
        await wait_for_dead_letters(settings, 2)
        url = f"http://127.0.0.1:{settings.worker_metrics_port}/metrics"
        deadline = time.monotonic() + 10
        topic = settings.erp_topic
        while True:  # lag and readiness come with the next status report
            text = (await client.get(url)).text
            samples = metric_samples(text)
            # The lag counts from the committed offsets: the 22 events of the topic
            # (2 refused, 20 balances) are all committed within a few seconds.
            done = sum(
                samples.get(
                    f'availability_worker_committed_offset{{partition="{p}",topic="{topic}"}}', 0
                )
                for p in range(4)
            )
            if "availability_worker_ready 1.0" in text and done == 22:
                break
            assert time.monotonic() < deadline, text
            await asyncio.sleep(0.2)
        # The probe beside the metrics: the worker's event loop turns (infra.probes).
        live = await client.get(f"http://127.0.0.1:{settings.worker_metrics_port}/livez")
        assert (live.status_code, live.json()) == (200, {"status": "ok"})
    samples = metric_samples(text)
    assert samples['availability_worker_events_folded_total{type="erp.balance"}'] == 20
    dead = 'availability_worker_dead_letters_total{{reason="{}",topic="{}"}}'
    assert samples[dead.format("malformed_json", settings.erp_topic)] == 1
    assert samples[dead.format("missing_field", settings.erp_topic)] == 1
    assert samples['availability_fold_latency_seconds_count{since="publish_time"}'] == 20
    assert samples['availability_fold_latency_seconds_count{since="event_time"}'] == 20
    # The balances are a year old by their as_of: all above the last finite bucket.
    assert samples['availability_fold_latency_seconds_bucket{le="300.0",since="event_time"}'] == 0
    assert samples['availability_fold_latency_seconds_bucket{le="60.0",since="publish_time"}'] == 20
    assert samples["availability_worker_serving_writes_total"] >= 20
    assert samples["availability_worker_serving_write_errors_total"] == 0
    assert samples["availability_worker_skus"] == 20
    for partition in range(4):
        lag = f'availability_worker_consumer_lag{{partition="{partition}",topic="{topic}"}}'
        assert samples[lag] == 0

    lines = [orjson.loads(line) for line in start_service.handles[0].log_text().splitlines()
             if line.startswith("{")]  # fmt: skip
    letters = [line for line in lines if line["message"].startswith("dead letter from")]
    assert [line["level"] for line in letters] == ["warning", "warning"]
    assert "sku" not in letters[0] and "event_id" not in letters[0]  # not JSON: unknown
    assert (letters[1]["sku"], letters[1]["event_id"]) == ("SKU-0", "x1")
    assert [(line["topic"], line["offset"]) for line in letters] == [
        (settings.erp_topic, 0),
        (settings.erp_topic, 1),
    ]


def metric_samples(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


async def test_drift_check_against_an_erp_export(
    settings: Settings, start_service: StartService, tmp_path: Path
) -> None:
    def event(kind: str, event_id: str, sku: str, **fields: Any) -> dict[str, Any]:
        return {"event_id": event_id, "type": kind, "sku": sku, "location_id": "S1", **fields}

    events = [
        event("erp.balance", "b1", "SKU-A", on_hand=10, as_of="2026-11-22T09:00:00Z"),
        event("erp.balance", "b2", "SKU-B", on_hand=10, as_of="2026-11-22T09:00:00Z"),
        event("pos.sale", "s1", "SKU-B", quantity=4, occurred_at="2026-11-22T11:00:00Z"),
        event("erp.balance", "b3", "SKU-C", on_hand=10, as_of="2026-11-22T09:00:00Z"),
    ]
    client = await start_stack(start_service, settings)
    async with client:
        await produce(settings, settings.erp_topic, [e for e in events if e["event_id"][0] == "b"])
        await produce(settings, settings.pos_topic, [events[2]])
        await until_equal(client, recompute(events, now_micros()), timeout=60)

        export = tmp_path / "erp.csv"
        export.write_text(
            "sku,location_id,on_hand,as_of\n"
            "SKU-A,S1,10,2026-11-22T10:00:00Z\n"  # agrees
            "SKU-B,S1,10,2026-11-22T10:00:00Z\n"  # the sale at 11:00 is not in it yet
            "SKU-C,S1,7,2026-11-22T10:00:00Z\n"  # the service has 10: unexplained
            "SKU-D,S1,5,2026-11-22T10:00:00Z\n"  # never heard of
            "SKU-E,S1,five,2026-11-22T10:00:00Z\n"  # a bad line
        )
        checked = run_cli(settings, "drift", str(export))
        assert checked.returncode == 1, checked.stdout + checked.stderr
        out = checked.stdout
        assert "line 6: on_hand 'five' is not a whole number" in out
        assert "4 rows checked, threshold 0: 2 drifted SKU-locations" in out
        assert "1 missing_location, 1 events_after_as_of, 1 unexplained" in out

        as_json = run_cli(settings, "drift", str(export), "--json", "--no-publish")
        report = orjson.loads(as_json.stdout)
        causes = {d["sku"]: d["cause"] for d in report["differences"]}
        assert causes == {
            "SKU-B": "events_after_as_of",
            "SKU-C": "unexplained",
            "SKU-D": "missing_location",
        }
        assert report["line_errors"] == [
            {"line": 6, "message": "on_hand 'five' is not a whole number"}
        ]

        metrics = (await client.get("/metrics")).text
        assert 'availability_drift_sku_locations{cause="unexplained"} 1.0' in metrics
        assert 'availability_drift_sku_locations{cause="events_after_as_of"} 1.0' in metrics

        within = run_cli(settings, "drift", str(export), "--threshold", "3", "--no-publish")
        assert "1 drifted" in within.stdout  # SKU-C is within 3; SKU-D still missing

        # The periodic job: off by default; on, it checks and publishes by itself.
        off = run_cli(settings, "drift-job")
        assert off.returncode == 0
        assert "the drift job is off" in off.stdout
        store = AvailabilityStore.from_url(settings.redis_url, settings.redis_key_prefix)
        try:
            before = await store.drift()
            assert before is not None
            job = start_service(
                "services.cli",
                settings,
                name="drift-job",
                args=["drift-job"],
                extra_env={
                    "AVAILABILITY_DRIFT_INTERVAL": "1",
                    "AVAILABILITY_DRIFT_EXPORT": str(export),
                    "AVAILABILITY_DRIFT_THRESHOLD": "3",
                },
            )
            deadline = time.monotonic() + 60
            while (now := await store.drift()) == before or now is None:
                assert job.running and time.monotonic() < deadline, job.tail()
                await asyncio.sleep(0.5)
            assert now["by_cause"]["unexplained"] == 0  # within the threshold of 3
            assert now["by_cause"]["missing_location"] == 1
            job.terminate()
        finally:
            await store.close()

        for args, message in [
            (["drift", str(tmp_path / "nope.csv")], "no such file"),
            (["drift", str(tmp_path / "erp.xml")], "give --format csv or jsonl"),
            (["drift", str(export), "--threshold", "-1"], "is not a whole number"),
        ]:
            refused = run_cli(settings, *args)
            assert refused.returncode == 2, refused
            assert message in refused.stderr


async def test_topics_create_makes_every_topic_once(dev_broker: DevBroker, tmp_path: Path) -> None:
    # What the Helm chart's pre-install job runs (README "Helm chart").
    settings = make_settings(dev_broker.url, "redis://127.0.0.1:1/0", tmp_path / "data")
    first = run_cli(settings, "topics", "create")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("created ")
    wanted = {topic: settings.partitions for topic in settings.partitioned_topics}
    wanted |= {settings.rules_topic: 1, settings.audit_topic: 1, settings.push_policies_topic: 1}
    assert await topic_problems(settings, wanted) == []
    again = run_cli(settings, "topics", "create")
    assert (again.returncode, again.stdout.strip()) == (0, "every topic exists already")
    # Another partition count: the upgrade's Job fails before any worker is touched.
    changed = run_cli(settings.model_copy(update={"partitions": 6}), "topics", "create")
    assert changed.returncode == 1
    assert f"topic '{settings.erp_topic}' has 4 partitions, expected 6" in changed.stderr
