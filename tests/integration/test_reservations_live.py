"""A reservation shows at once in every live view (README "Reservations"): Watch, the
change feed and the Shopify push see a hold the moment the API answers 201, before
any worker has folded the reservation, and once the worker folds it they count it
once. Real processes throughout: the HTTP and gRPC APIs, the worker, the broker.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import httpx
import orjson
import pytest

from availability.ats import SkuAvailability, build_availability
from availability.events import Event, event_from_dict
from availability.rules import RuleBook
from availability.state import fold_all
from dev.shopify_admin.client import StandIn
from infra.config import Settings
from infra.store import AvailabilityStore
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from tests.integration.conftest import StartService
from tests.integration.grpc_support import AUTH, Apis, Stream, watch
from tests.integration.push_support import (
    TOKEN_ENV,
    assert_no_call_applied_twice,
    push_settings,
    seed_shop,
    shop_levels,
    target,
    wait_consuming,
    wait_for,
)
from tests.integration.shopify_support import TOKEN
from tests.integration.shopify_support import standin as standin
from tests.integration.support import (
    auth_headers,
    consume_all,
    free_port,
    produce,
    wait_http_ready,
    wait_until,
)
from tests.integration.test_reservations import erp_balance, reserve_body


async def reference(settings: Settings, name: str) -> SkuAvailability:
    """The figures the fold of everything the log holds gives for ``name``."""
    events: list[Event] = []
    for topic in (settings.erp_topic, settings.reservations_topic):
        for record in await consume_all(settings, topic, idle=0.3):
            event = event_from_dict(orjson.loads(record.value))
            if event.sku == name:
                events.append(event)
    return build_availability(fold_all(name, events), RuleBook(), time.time_ns() // 1000)


def at_s1(message: pb.WatchAvailabilityResponse) -> tuple[int, int]:
    [location] = message.availability.locations
    return location.reserved, location.ats


async def stocked_by_a_worker(
    apis: Apis, settings: Settings, start_service: StartService, name: str, units: int
) -> None:
    """``units`` at S-1 folded by a worker, which is then stopped: from here on only a
    hold can change what the reads show."""
    await produce(settings, settings.erp_topic, [erp_balance(name, units)])
    worker = start_service("streams", settings, name="worker")

    async def stocked() -> bool:
        return (await apis.http.get(f"/v1/availability/{name}")).status_code == 200

    await wait_until(stocked, timeout=90)
    assert worker.terminate() == 0, worker.tail()


async def next_change(call: Stream, previous: int) -> pb.WatchAvailabilityResponse:
    message = await call.read()
    assert not message.initial
    assert message.version > previous
    return message


async def test_watch_shows_a_hold_at_once_and_the_fold_counts_it_once(
    apis: Apis, settings: Settings, start_service: StartService
) -> None:
    await stocked_by_a_worker(apis, settings, start_service, "LIVE-W", 10)
    async with watch(apis.stub, ["LIVE-W"], "online") as call:
        [initial] = (await call.read_initial(1)).values()
        assert at_s1(initial) == (0, 10)
        made = await apis.http.post(
            "/v1/reservations", json=reserve_body("live-w1", {"sku": "LIVE-W", "quantity": 3})
        )
        assert made.status_code == 201, made.text
        # No worker runs: the change can only be the reserve step's own announcement.
        held = await next_change(call, initial.version)
        assert at_s1(held) == (3, 7)
        assert held.availability.ats == 7

        # A watch opened now starts from the served figures, hold included.
        async with watch(apis.stub, ["LIVE-W"], "online") as late:
            [start] = (await late.read_initial(1)).values()
            assert (at_s1(start), start.version) == ((3, 7), held.version)

        # A release frees the units at once too.
        assert (await apis.http.delete("/v1/reservations/live-w1")).status_code == 204
        freed = await next_change(call, held.version)
        assert at_s1(freed) == (0, 10)
        made = await apis.http.post(
            "/v1/reservations", json=reserve_body("live-w2", {"sku": "LIVE-W", "quantity": 4})
        )
        assert made.status_code == 201, made.text
        again = await next_change(call, freed.version)
        assert at_s1(again) == (4, 6)

        # The worker now folds the events and hands the hold over: the figures stay
        # (reserved 4, not 8), and equal the reference fold of the log.
        start_service("streams", settings, name="worker-2")

        async def handed_over() -> bool:
            return not await apis.store.client.exists(apis.store.holds_key("LIVE-W"))

        await wait_until(handed_over, timeout=90)
        expected = await reference(settings, "LIVE-W")
        [location] = expected.locations
        assert (location.reserved, location.ats("online")) == (4, 6)
        last = again
        while not call.queue.empty():  # whatever the fold announced: never a double count
            last = await next_change(call, last.version)
            assert at_s1(last) == (4, 6)
        get = await apis.stub.GetAvailability(
            pb.GetAvailabilityRequest(sku="LIVE-W", channel="online"), metadata=AUTH
        )
        assert get == last.availability


async def feed_of(settings: Settings, name: str) -> list[dict[str, Any]]:
    """The change feed's records of ``name``, in the order the topic holds them."""
    records = await consume_all(settings, settings.changes_topic, idle=0.3)
    values = [orjson.loads(record.value) for record in records]
    return [value for value in values if value["sku"] == name]


def latest(records: list[dict[str, Any]]) -> dict[str, Any]:
    """What a consumer applying only greater versions ends with."""
    return max(records, key=lambda record: record["version"])


def store_figures(record: dict[str, Any]) -> tuple[int, int]:
    """The reserved units and ATS of a SKU's one location in a feed record."""
    return record["reserved"], record["ats"]


async def test_the_feed_and_the_push_show_a_hold_at_once_and_the_fold_counts_it_once(
    settings: Settings, start_service: StartService, standin: StandIn
) -> None:
    locations = seed_shop(standin, ["LIVE-P"])
    s = push_settings(settings, [target(standin, {"S-1": locations["STORE-001"]})])
    start_service("services.http", s, name="api")
    await wait_http_ready(s.http_port, path="/healthz", timeout=60)
    push = start_service("services.push", s, extra_env={TOKEN_ENV: TOKEN})
    wait_consuming(push)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{s.http_port}", timeout=20, headers=auth_headers()
    ) as http:
        await produce(s, s.erp_topic, [erp_balance("LIVE-P", 10)])
        worker = start_service("streams", s, name="worker")
        wait_for(lambda: shop_levels(standin).get(("LIVE-P", "STORE-001")) == 10, timeout=90)
        assert worker.terminate() == 0, worker.tail()
        before = latest(await feed_of(s, "LIVE-P"))
        assert store_figures(before) == (0, 10)

        made = await http.post(
            "/v1/reservations", json=reserve_body("live-p1", {"sku": "LIVE-P", "quantity": 3})
        )
        assert made.status_code == 201, made.text
        # No worker runs: the feed's record of the hold was put there by the API, with
        # a version above the worker's, before it answered.
        held = latest(await feed_of(s, "LIVE-P"))
        assert held["version"] > before["version"]
        assert store_figures(held) == (3, 7)
        assert held["ats"] == 7
        wait_for(lambda: shop_levels(standin)[("LIVE-P", "STORE-001")] == 7, timeout=10)

        # The worker folds the event and hands the hold over: no double count on the
        # feed or in the shop, and the figures equal the reference fold of the log.
        start_service("streams", s, name="worker-2")
        store = AvailabilityStore.from_url(s.redis_url, s.redis_key_prefix)
        try:

            async def handed_over() -> bool:
                return not await store.client.exists(store.holds_key("LIVE-P"))

            await wait_until(handed_over, timeout=90)
            # ...and until the feed has what the record serves now.
            [(version, _)] = await store.read_versions(["LIVE-P"])

            async def fed() -> bool:
                return latest(await feed_of(s, "LIVE-P"))["version"] >= version

            await wait_until(fed, timeout=30)
        finally:
            await store.close()
        records = await feed_of(s, "LIVE-P")
        assert all(store_figures(r) == (3, 7) for r in records if r["version"] >= held["version"])
        [location] = (await reference(s, "LIVE-P")).locations
        assert (location.reserved, location.ats("online")) == store_figures(latest(records))
        time.sleep(0.5)
        assert shop_levels(standin)[("LIVE-P", "STORE-001")] == 7
        assert_no_call_applied_twice(standin)

        # A release frees the units on the feed and in the shop at once too.
        assert (await http.delete("/v1/reservations/live-p1")).status_code == 204
        freed = latest(await feed_of(s, "LIVE-P"))
        assert store_figures(freed) == (0, 10)
        wait_for(lambda: shop_levels(standin)[("LIVE-P", "STORE-001")] == 10, timeout=10)


async def test_a_hold_whose_event_never_reached_the_broker_is_freed_on_watch_and_feed(
    apis: Apis, settings: Settings, start_service: StartService
) -> None:
    """kill -9 of an API process while its reservation's event is on its way to a
    broker that never answers: Watch shows the hold at once, and once the publish
    window has passed the worker (which never heard of the reservation) purges it,
    so Watch and the change feed show the units free again."""
    await produce(settings, settings.erp_topic, [erp_balance("LIVE-C", 4)])
    start_service("streams", settings, name="worker")

    async def stocked() -> bool:
        return (await apis.http.get("/v1/availability/LIVE-C")).status_code == 200

    await wait_until(stocked, timeout=90)

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # a "broker" that takes connections and never answers

    black_hole = await asyncio.start_server(silent, "127.0.0.1", 0)
    window = 5.0
    doomed = settings.model_copy(
        update={
            "broker": f"kafka://127.0.0.1:{black_hole.sockets[0].getsockname()[1]}",
            "http_port": free_port(),
            "reservation_publish_window": window,
            "reservation_publish_timeout": window - 0.5,
        }
    )
    process = start_service("services.http", doomed, name="doomed-api")
    await wait_http_ready(doomed.http_port, path="/healthz", timeout=60, process=process)
    async with (
        watch(apis.stub, ["LIVE-C"], "online") as call,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{doomed.http_port}", timeout=30, headers=auth_headers()
        ) as client,
    ):
        [initial] = (await call.read_initial(1)).values()
        assert at_s1(initial) == (0, 4)
        request = asyncio.create_task(
            client.post(
                "/v1/reservations", json=reserve_body("live-c1", {"sku": "LIVE-C", "quantity": 4})
            )
        )
        held = await next_change(call, initial.version)
        placed = time.monotonic()
        assert at_s1(held) == (4, 0)
        process.kill(signal.SIGKILL)
        with pytest.raises(httpx.TransportError):
            await request
        freed = await next_change(call, held.version)
        assert at_s1(freed) == (0, 4)
        assert time.monotonic() - placed <= window + 1.5

    async def fed() -> bool:
        records = await feed_of(settings, "LIVE-C")
        return latest(records)["version"] >= freed.version

    await wait_until(fed, timeout=10)
    assert store_figures(latest(await feed_of(settings, "LIVE-C"))) == (0, 4)
    assert [
        orjson.loads(r.value)
        for r in await consume_all(settings, settings.reservations_topic, idle=0.3)
    ] == []
    [location] = (await reference(settings, "LIVE-C")).locations
    assert (location.reserved, location.ats("online")) == (0, 4)
    black_hole.close()
