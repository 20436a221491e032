"""The stream processor end to end: real broker, real Redis, real worker and API
processes; answers read over HTTP and compared with an independent recomputation."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import grpc
import httpx
import orjson

from availability.ats import build_availability, view
from availability.identifiers import parse_timestamp
from availability.journal import restore
from availability.rules import RuleBook
from availability.state import SkuState
from infra.config import Settings
from infra.kafka import partition_for
from infra.store import AvailabilityStore
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from services.grpc.gen.availability.v1 import availability_pb2_grpc as pb_grpc
from tests.integration.conftest import StartService
from tests.integration.grpc_support import Stream, wait_serving, watch
from tests.integration.scenario import Delivery, mixed_stream, stamp, topic_of
from tests.integration.support import (
    SKU_KEY,
    auth_headers,
    consume_all,
    new_producer,
    produce,
    wait_http_ready,
)
from tests.reference import recompute


def now_micros() -> int:
    return time.time_ns() // 1000


async def publish(settings: Settings, deliveries: list[Delivery]) -> None:
    """Publish in order; runs of the same topic and key style go in one call."""
    groups: list[tuple[str, Any, list[dict[str, Any]]]] = []
    for d in deliveries:
        topic = topic_of(settings, d)
        key: Any = SKU_KEY if d.key == "" else d.key
        if groups and groups[-1][0] == topic and groups[-1][1] == key:
            groups[-1][2].append(d.event)
        else:
            groups.append((topic, key, [d.event]))
    producer = new_producer(settings)
    await producer.start()
    try:
        for topic, key, events in groups:
            await produce(settings, topic, events, key=key, producer=producer)
    finally:
        await producer.stop()


async def answers(
    client: httpx.AsyncClient, skus: list[str], channel: str = "online"
) -> dict[str, Any]:
    got: dict[str, Any] = {}
    for start in range(0, len(skus), 500):
        chunk = skus[start : start + 500]
        response = await client.post(
            "/v1/availability:batch", json={"skus": chunk, "channel": channel}
        )
        assert response.status_code == 200, response.text
        for item in response.json()["items"]:
            got[item["sku"]] = item
    return got


async def until_equal(
    client: httpx.AsyncClient,
    expected: dict[str, Any],
    timeout: float,
    channel: str = "online",
) -> None:
    deadline = time.monotonic() + timeout
    skus = sorted(expected)
    while True:
        got = await answers(client, skus, channel)
        if got == expected:
            return
        if time.monotonic() > deadline:
            wrong = [sku for sku in skus if got.get(sku) != expected[sku]]
            first = wrong[0]
            raise AssertionError(
                f"{len(wrong)} of {len(skus)} SKUs differ; first {first}:\n"
                f"got      {got.get(first)}\nexpected {expected[first]}"
            )
        await asyncio.sleep(0.25)


async def feed_by_sku(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """The change feed's records per SKU (one per location changed), in the order of
    their partition: keyed ``<sku> <location_id>``, in the SKU's partition."""
    records: dict[str, list[dict[str, Any]]] = {}
    for record in await consume_all(settings, settings.changes_topic, timeout=10, idle=0.5):
        assert record.key is not None and record.value is not None
        sku, _, location_id = record.key.decode().partition(" ")
        assert record.partition == partition_for(sku.encode(), settings.partitions)
        value = orjson.loads(record.value)
        assert (value["sku"], value["location_id"]) == (sku, location_id)
        records.setdefault(sku, []).append(value)
    return records


def feed_view(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What a consumer applying only greater versions per location ends with."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        held = latest.get(record["location_id"])
        if held is None or record["version"] > held["version"]:
            latest[record["location_id"]] = record
    return latest


def feed_answer(
    sku: str, view: dict[str, dict[str, Any]], listed: list[str], channel: str = "online"
) -> dict[str, Any]:
    """A SKU's change-feed records as the HTTP answer for ``channel`` (README "Change
    feed"), at the ``listed`` locations."""
    locations = []
    for location_id in listed:
        loc = view[location_id]
        buffer = loc["buffers"].get(channel, 0)
        ats = max(0, loc["on_hand"] - loc["reserved"] - loc["safety_stock"] - buffer)
        fields = ("location_id", "on_hand", "reserved", "in_transit", "damaged", "safety_stock")
        locations.append({**{f: loc[f] for f in fields}, "buffer": buffer, "ats": ats})
    return {
        "sku": sku,
        "channel": channel,
        "ats": sum(loc["ats"] for loc in locations),
        "locations": locations,
    }


async def until_feed_complete(
    settings: Settings, expected: dict[str, Any], timeout: float, *, strictly: bool = True
) -> dict[str, list[dict[str, Any]]]:
    """Wait until the change feed holds every SKU's serving record at its version: the
    newest record of the SKU is of the record's version, and the latest record of each
    location gives the figures served (a location no longer listed has nothing);
    versions of a location never go back (with ``strictly``: never repeat)."""
    store = AvailabilityStore.for_settings(settings)
    deadline = time.monotonic() + timeout
    try:
        while True:
            feed = await feed_by_sku(settings)
            stored = {sku: await store.client.hget(store.sku_key(sku), "v") for sku in expected}
            newest = {sku: max(r["version"] for r in records) for sku, records in feed.items()}
            behind = [
                sku for sku in expected
                if sku not in newest or newest[sku] != int(stored[sku] or 0)
            ]  # fmt: skip
            if not behind:
                break
            assert time.monotonic() < deadline, f"{len(behind)} SKUs behind, e.g. {behind[0]}"
            await asyncio.sleep(0.5)
    finally:
        await store.close()
    for sku, records in feed.items():
        by_location: dict[str, list[int]] = {}
        for record in records:
            by_location.setdefault(record["location_id"], []).append(record["version"])
        for versions in by_location.values():
            pairs = list(pairwise(versions))
            assert all(a < b if strictly else a <= b for a, b in pairs), (sku, versions)
    for sku, answer in expected.items():
        view = feed_view(feed[sku])
        listed = [loc["location_id"] for loc in answer["locations"]]
        assert feed_answer(sku, view, listed) == answer, sku
        for location_id, record in view.items():
            if location_id not in listed:
                assert (record["on_hand"], record["reserved"], record["ats"]) == (0, 0, 0)
    assert set(feed) == set(expected)
    return feed


async def start_stack(
    start_service: StartService, settings: Settings, workers: int = 1
) -> httpx.AsyncClient:
    for n in range(workers):
        start_service("streams", settings, name=f"worker-{n + 1}")
    api = start_service("services.http", settings, name="api")
    await wait_http_ready(settings.http_port, timeout=90, process=api)
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{settings.http_port}", timeout=10, headers=auth_headers()
    )


@contextlib.asynccontextmanager
async def grpc_api(
    start_service: StartService, settings: Settings
) -> AsyncIterator[pb_grpc.AvailabilityServiceStub]:
    process = start_service("services.grpc", settings, name="grpc")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel:
        await wait_serving(channel, process)
        yield pb_grpc.AvailabilityServiceStub(channel)


async def watch_until(stream: Stream, ats: int, within: float) -> pb.WatchAvailabilityResponse:
    """The first message showing ``ats``, which must come within ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        message = await stream.read(timeout=max(0.0, deadline - time.monotonic()))
        if message.availability.ats == ats:
            return message


async def test_mixed_stream_read_back_equals_a_recomputation(
    settings: Settings, start_service: StartService
) -> None:
    distinct, deliveries = mixed_stream(seed=11)
    client = await start_stack(start_service, settings)
    async with client:
        # Half before, half while the worker runs.
        half = len(deliveries) // 2
        await publish(settings, deliveries[:half])
        await publish(settings, deliveries[half:])
        expected = recompute(distinct, now_micros())
        await until_equal(client, expected, timeout=60)
        for channel in ("store", "marketplace"):
            await until_equal(
                client, recompute(distinct, now_micros(), channel=channel), 10, channel
            )
        # Every event was applied through its own SKU, including the unkeyed and
        # wrongly keyed ones, and nothing went to the dead letters.
        assert await consume_all(settings, settings.dlq_topic, timeout=3) == []
        one = sorted(expected)[0]
        single = await client.get(f"/v1/availability/{one}")
        assert single.status_code == 200
        assert single.json() == expected[one]
        # The change feed carries each SKU's changes in order, ending at its figures.
        await until_feed_complete(settings, expected, timeout=30)
    # The table's changelog holds each SKU's journal on the SKU's own partition, the
    # one its events arrive on (what makes recovery land on the right worker), and
    # the journal alone rebuilds the figures served.
    changelog = await consume_all(settings, f"{settings.faust_app_id}-sku-state-changelog")
    states: dict[str, SkuState] = {}
    for record in changelog:
        assert record.key is not None
        sku = record.key.decode().partition(" ")[0]
        assert record.partition == partition_for(sku.encode(), settings.partitions)
        restore(states, record.key.decode(), record.value)
    assert set(states) == set(expected)
    now = now_micros()
    for sku, state in states.items():
        assert view(build_availability(state, RuleBook(), now), "online") == expected[sku]


async def test_invalid_events_go_to_the_dead_letter_topic_and_change_nothing(
    settings: Settings, start_service: StartService
) -> None:
    t = "2026-11-22T09:00:00.000Z"
    valid = [
        {
            "event_id": "b",
            "type": "erp.balance",
            "sku": "SKU-X",
            "location_id": "S1",
            "on_hand": 10,
            "as_of": t,
        },
    ]
    sale = {
        "event_id": "s",
        "type": "pos.sale",
        "sku": "SKU-X",
        "location_id": "S1",
        "quantity": 1,
        "occurred_at": "2026-11-22T10:00:00Z",
    }
    invalid: list[tuple[bytes, str]] = [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (
            orjson.dumps(
                {k: v for k, v in sale.items() if k != "location_id"} | {"event_id": "i1"}
            ),
            "missing required field 'location_id'",
        ),
        (
            orjson.dumps(sale | {"event_id": "i2", "quantity": 0}),
            "'quantity' must be an integer > 0",
        ),
        (
            orjson.dumps(sale | {"event_id": "i3", "quantity": "2"}),
            "'quantity' must be an integer > 0",
        ),
        (orjson.dumps(sale | {"event_id": "i4", "type": "pos.teleport"}), "unknown event type"),
        (
            orjson.dumps(sale | {"event_id": "i5", "occurred_at": "yesterday"}),
            "not an RFC 3339 timestamp",
        ),
        (orjson.dumps(sale | {"event_id": "i6", "sku": "bad sku!"}), "field 'sku'"),
        (orjson.dumps(sale | {"event_id": ""}), "field 'event_id'"),
    ]
    client = await start_stack(start_service, settings)
    async with client:
        await produce(settings, settings.erp_topic, valid)
        metadata = await produce(
            settings, settings.pos_topic, [raw for raw, _ in invalid], key="SKU-X"
        )
        # A valid event after the invalid ones on the same partition: once it shows,
        # the invalid ones have been handled.
        await produce(
            settings, settings.pos_topic, [sale], key="SKU-X", partition=metadata[0].partition
        )
        expected = recompute([*valid, sale], now_micros())
        await until_equal(client, expected, timeout=60)

        letters = await consume_all(settings, settings.dlq_topic, timeout=10)
        assert len(letters) == len(invalid)
        by_offset = {orjson.loads(r.value)["offset"]: (r, orjson.loads(r.value)) for r in letters}
        for (raw, reason), meta in zip(invalid, metadata, strict=True):
            record, letter = by_offset[meta.offset]
            assert record.key == b"SKU-X"
            assert base64.b64decode(letter["original"]) == raw
            assert letter["topic"] == settings.pos_topic
            assert letter["partition"] == meta.partition
            assert reason in letter["reason"], letter["reason"]
        metrics = (await client.get("/metrics")).text
        assert f'availability_dead_letters_total{{topic="{settings.pos_topic}"}} 9.0' in metrics


async def test_worker_killed_mid_stream_ends_in_the_same_state(
    settings: Settings, start_service: StartService
) -> None:
    distinct, deliveries = mixed_stream(seed=23, skus=120, events_per_sku=20)
    chunks = [deliveries[i : i + 200] for i in range(0, len(deliveries), 200)]
    store = AvailabilityStore.for_settings(settings)
    worker = start_service("streams", settings, name="worker")
    try:
        # Events keep arriving while the worker is killed and while it is down.
        await publish(settings, chunks[0])
        await wait_until_folded(store, 1, timeout=90)
        publishing = asyncio.create_task(publish_slowly(settings, chunks[1:]))
        await wait_until_folded(store, len(deliveries) // 4, timeout=120)
        worker.kill(signal.SIGKILL)
        worker.wait(10)
        assert not publishing.done(), "publishing ended before the worker was killed"
        await asyncio.sleep(1.0)
        worker.start()
        await publishing
        expected = recompute(distinct, now_micros())
        client = await start_stack(start_service, settings, workers=0)
        async with client:
            await until_equal(client, expected, timeout=150)
        # No change is missing from the feed: a version written before the kill and
        # not yet published is published after the restart (perhaps twice).
        await until_feed_complete(settings, expected, timeout=30, strictly=False)
    finally:
        await store.close()


async def publish_slowly(settings: Settings, chunks: list[list[Delivery]]) -> None:
    for chunk in chunks:
        await publish(settings, chunk)
        await asyncio.sleep(0.3)


async def wait_until_folded(store: AvailabilityStore, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        counts = await store.counts()
        if sum(n for name, n in counts.items() if name.startswith("folded:")) >= count:
            return
        assert time.monotonic() < deadline, f"fewer than {count} events folded: {counts}"
        await asyncio.sleep(0.05)


async def test_rule_change_shows_in_reads_within_one_second(
    settings: Settings, start_service: StartService
) -> None:
    balance = {
        "event_id": "b",
        "type": "erp.balance",
        "sku": "SKU-R",
        "location_id": "S1",
        "on_hand": 50,
        "as_of": "2026-11-22T09:00:00Z",
    }
    client = await start_stack(start_service, settings)
    async with client, grpc_api(start_service, settings) as stub:
        stream = watch(stub, ["SKU-R"])
        await stream.read_initial(1)
        await produce(settings, settings.erp_topic, [balance])
        await until_equal(client, recompute([balance], now_micros()), timeout=30)
        await watch_until(stream, 50, within=5)

        rule = {
            "sku": None,
            "location_id": "S1",
            "safety_stock": 5,
            "channel_buffers": {"online": 3},
        }
        started = time.monotonic()
        response = await client.put("/v1/rules/store-1", json=rule)
        assert response.status_code == 200, response.text
        while (await client.get("/v1/availability/SKU-R")).json()["ats"] != 42:
            assert time.monotonic() - started < 1.0, "rule change not visible within one second"
            await asyncio.sleep(0.02)
        await watch_until(stream, 42, within=1.0 - (time.monotonic() - started))
        expected = recompute([balance], now_micros(), rules=[rule])
        await until_equal(client, expected, timeout=1)
        assert (await client.get("/v1/availability/SKU-R", params={"channel": "store"})).json()[
            "ats"
        ] == 45

        started = time.monotonic()
        assert (await client.delete("/v1/rules/store-1")).status_code == 204
        while (await client.get("/v1/availability/SKU-R")).json()["ats"] != 50:
            assert time.monotonic() - started < 1.0, "rule removal not visible within one second"
            await asyncio.sleep(0.02)
        await watch_until(stream, 50, within=1.0 - (time.monotonic() - started))
        await stream.close()
    # The rule changes are in the change feed too: 50, then 42, then 50.
    feed = await until_feed_complete(settings, recompute([balance], now_micros()), timeout=10)
    # The feed's ats has no channel buffer: 50 - 5 safety stock; "online" is in buffers.
    assert [record["ats"] for record in feed["SKU-R"]] == [50, 45, 50]


async def test_rules_and_state_survive_a_restart_of_every_process(
    settings: Settings, start_service: StartService
) -> None:
    balance = {
        "event_id": "b",
        "type": "erp.balance",
        "sku": "SKU-P",
        "location_id": "S1",
        "on_hand": 20,
        "as_of": "2026-11-22T09:00:00Z",
    }
    rule = {"sku": "SKU-P", "location_id": None, "safety_stock": 4, "channel_buffers": None}
    client = await start_stack(start_service, settings)
    async with client:
        await produce(settings, settings.erp_topic, [balance])
        assert (await client.put("/v1/rules/p", json=rule)).status_code == 200
        await until_equal(client, recompute([balance], now_micros(), rules=[rule]), timeout=30)
    # Stop everything, empty the serving layer, start again.
    start_service.stop_all()
    store = AvailabilityStore.for_settings(settings)
    await store.client.delete(store.sku_key("SKU-P"))
    await store.close()
    client = await start_stack(start_service, settings)
    async with client:
        assert (await client.get("/v1/rules/p")).json() == {"rule_id": "p", **rule}
        await until_equal(client, recompute([balance], now_micros(), rules=[rule]), timeout=60)


async def test_a_reservation_expires_by_itself(
    settings: Settings, start_service: StartService
) -> None:
    client = await start_stack(start_service, settings)
    now = datetime.now(UTC)
    events = [
        {
            "event_id": "b",
            "type": "erp.balance",
            "sku": "SKU-E",
            "location_id": "S1",
            "on_hand": 10,
            "as_of": stamp(now - timedelta(hours=1)),
        },
        {
            "event_id": "r",
            "type": "reservation.created",
            "sku": "SKU-E",
            "reservation_id": "O1",
            "location_id": "S1",
            "quantity": 4,
            "occurred_at": stamp(now),
            "expires_at": stamp(now + timedelta(seconds=4)),
        },
    ]
    async with client, grpc_api(start_service, settings) as stub:
        stream = watch(stub, ["SKU-E"])
        await stream.read_initial(1)
        await produce(settings, settings.reservations_topic, events[1:])
        await produce(settings, settings.erp_topic, events[:1])
        before = recompute(events, now_micros())
        assert before["SKU-E"]["ats"] == 6
        await until_equal(client, before, timeout=30)
        await watch_until(stream, 6, within=2)
        expiry = parse_timestamp(events[1]["expires_at"])
        while now_micros() < expiry:
            await asyncio.sleep(0.1)
        # No event arrives; the reservation releases itself.
        await until_equal(client, recompute(events, now_micros()), timeout=2)
        assert (await client.get("/v1/availability/SKU-E")).json()["ats"] == 10
        await watch_until(stream, 10, within=2)
        await stream.close()
    feed = await until_feed_complete(settings, recompute(events, now_micros()), timeout=10)
    assert feed["SKU-E"][-1]["ats"] == 10 and feed["SKU-E"][-2]["ats"] == 6


async def test_worker_refuses_topics_with_another_partition_count(
    settings: Settings, start_service: StartService
) -> None:
    # The topics have 4 partitions; a worker configured for 8 would route SKUs to
    # partitions that do not hold their state.
    worker = start_service("streams", settings.model_copy(update={"partitions": 8}))
    assert await asyncio.to_thread(worker.wait, 60) == 2
    log = worker.log_text()
    assert f"topic '{settings.erp_topic}' has 4 partitions, expected 8" in log
    assert "create the topics" in log
