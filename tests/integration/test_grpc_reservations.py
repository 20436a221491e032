"""The gRPC reservation RPCs (README "Reservations", "gRPC API") against a real
``python -m services.grpc`` and ``python -m services.http`` over the same Redis and
the development broker: concurrency, all-or-nothing with the per-line shortage in the
status details, idempotency and conflict, release, get, extend, bad input, outages,
metrics, and reservations made through one API seen and settled through the other.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import status_pb2

from infra.config import Settings
from infra.reservation_store import ReservationStore
from infra.store import AvailabilityStore
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from services.grpc.reservations import STATUS_DETAILS_KEY, parse_reserve, reservation_dict
from tests.integration.conftest import StartService, make_settings
from tests.integration.grpc_support import AUTH, Apis, forget_store, status_of, wait_serving
from tests.integration.support import free_port
from tests.integration.test_reservations import reservation_events, reserve_body, sku


def line(name: str, quantity: int, location_id: str | None = None) -> pb.ReservationLine:
    return pb.ReservationLine(sku=name, quantity=quantity, location_id=location_id)


def reserve(rid: str, *lines: pb.ReservationLine, expires_in_s: int = 600) -> pb.ReserveRequest:
    return pb.ReserveRequest(
        reservation_id=rid, channel="online", expires_in_s=expires_in_s, lines=lines
    )


async def held(apis: Apis, name: str) -> list[str]:
    """The reservation ids holding units of ``name`` (live or not)."""
    [(_, holds)] = await ReservationStore(apis.store).figures([name])
    return sorted(hold.reservation_id for hold in holds)


def shortage_of(error: grpc.aio.AioRpcError) -> pb.InsufficientStock:
    """The InsufficientStock of a FAILED_PRECONDITION's rich status (as any gRPC
    client reads it: google.rpc.Status in grpc-status-details-bin)."""
    trailers = dict(error.trailing_metadata() or ())
    status = status_pb2.Status.FromString(trailers[STATUS_DETAILS_KEY])
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert status.message == error.details()
    [packed] = status.details
    detail = pb.InsufficientStock()
    assert packed.Unpack(detail)
    return detail


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def test_100_concurrent_reserves_of_5_units_exactly_5_succeed(
    apis: Apis, settings: Settings
) -> None:
    await apis.store.write_records([sku("G-FLASH", ("S-1", 3), ("S-2", 2))])

    async def one(n: int) -> pb.ReserveResponse | grpc.aio.AioRpcError:
        try:
            return await apis.stub.Reserve(
                reserve(f"g{n}", line("G-FLASH", 1)), metadata=AUTH, timeout=30
            )
        except grpc.aio.AioRpcError as exc:
            return exc

    answers = await asyncio.gather(*(one(n) for n in range(100)))
    made = [a for a in answers if isinstance(a, pb.ReserveResponse)]
    errors = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert len(made) == 5, Counter(e.code() for e in errors)
    assert {e.code() for e in errors} == {grpc.StatusCode.FAILED_PRECONDITION}
    placed = Counter(a.reservation.lines[0].location_id for a in made)
    assert placed == {"S-1": 3, "S-2": 2}
    assert errors[0].details() == (
        "not every line can be held; nothing is held: lines[0] G-FLASH: asked 1, available 0"
    )
    detail = shortage_of(errors[0])
    assert list(detail.lines) == [pb.LineShortage(line=0, sku="G-FLASH", asked=1, available=0)]
    assert detail.omitted_lines == 0
    winners = {a.reservation.reservation_id for a in made}
    assert await held(apis, "G-FLASH") == sorted(winners)
    events = await reservation_events(settings)
    assert len(events) == 5 and {e["reservation_id"] for e in events} == winners


async def test_all_or_nothing_idempotency_and_conflict(apis: Apis) -> None:
    await apis.store.write_records(
        [sku("G-A", ("S-1", 4)), sku("G-B", ("S-1", 1), ("DC", 2), buffers={"online": 1})]
    )
    first = reserve("g-order-1", line("G-A", 3), line("G-B", 1))
    made = await apis.stub.Reserve(first, metadata=AUTH)
    assert not made.replayed
    shown = made.reservation
    assert shown.status == pb.RESERVATION_STATUS_HELD and shown.channel == "online"
    # G-B's buffer of 1 for online leaves 0 at S-1 and 1 at DC: the line goes to DC.
    assert [(x.sku, x.quantity, x.location_id) for x in shown.lines] == [
        ("G-A", 3, "S-1"),
        ("G-B", 1, "DC"),
    ]
    assert shown.expires_at > shown.created_at
    # The same request again, its lines in another order: the first answer, replayed.
    again = await apis.stub.Reserve(
        reserve("g-order-1", line("G-B", 1), line("G-A", 3)), metadata=AUTH
    )
    assert again.replayed and again.reservation == shown
    # Another body under the id.
    other = await refused(apis.stub.Reserve(reserve("g-order-1", line("G-A", 2)), metadata=AUTH))
    assert other.code() == grpc.StatusCode.ALREADY_EXISTS
    assert other.details() == (
        "reservation 'g-order-1' exists with another request body; use a new reservation_id"
    )

    # G-A has 1 left, G-B none at DC: the first line fits, the second not; neither held.
    short = await refused(
        apis.stub.Reserve(reserve("g-order-2", line("G-A", 1), line("G-B", 1, "DC")), metadata=AUTH)
    )
    assert short.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert short.details() == (
        "not every line can be held; nothing is held: lines[1] G-B at DC: asked 1, available 0"
    )
    detail = shortage_of(short)
    assert list(detail.lines) == [  # the short line first, each naming its index
        pb.LineShortage(line=1, sku="G-B", location_id="DC", asked=1, available=0),
        pb.LineShortage(line=0, sku="G-A", asked=1, available=1),
    ]
    assert await held(apis, "G-A") == ["g-order-1"]
    missing = await refused(
        apis.stub.GetReservation(
            pb.GetReservationRequest(reservation_id="g-order-2"), metadata=AUTH
        )
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    # A refused request leaves no record: retried once the stock is there, it is placed.
    assert (
        await apis.stub.Reserve(reserve("g-order-3", line("G-A", 1)), metadata=AUTH)
    ).reservation


async def test_release_get_and_extend(apis: Apis, settings: Settings) -> None:
    await apis.store.write_records([sku("G-R", ("S-1", 2))])
    made = (await apis.stub.Reserve(reserve("g-rel", line("G-R", 2)), metadata=AUTH)).reservation
    get = pb.GetReservationRequest(reservation_id="g-rel")
    assert await apis.stub.GetReservation(get, metadata=AUTH) == made

    extend = pb.ExtendReservationRequest(reservation_id="g-rel", expires_in_s=14_400)
    extended = await apis.stub.ExtendReservation(extend, metadata=AUTH)
    assert extended.expires_at > made.expires_at
    assert extended.status == pb.RESERVATION_STATUS_HELD
    assert (await apis.stub.GetReservation(get, metadata=AUTH)).expires_at == extended.expires_at

    release = pb.ReleaseRequest(reservation_id="g-rel")
    assert not (await apis.stub.Release(release, metadata=AUTH)).already_released
    assert await held(apis, "G-R") == []  # free at once
    assert (await apis.stub.Release(release, metadata=AUTH)).already_released  # idempotent
    released = await apis.stub.GetReservation(get, metadata=AUTH)
    assert released.status == pb.RESERVATION_STATUS_RELEASED
    not_active = await refused(apis.stub.ExtendReservation(extend, metadata=AUTH))
    assert not_active.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert not_active.details() == (
        "reservation 'g-rel' is released; only a held one can be extended"
    )
    # The first request again, after the release: replayed (as HTTP does, the answer
    # kept with the reservation, which shows its release and extension), nothing held.
    replay = await apis.stub.Reserve(reserve("g-rel", line("G-R", 2)), metadata=AUTH)
    assert replay.replayed and replay.reservation == released
    assert await held(apis, "G-R") == []

    for call in (
        apis.stub.GetReservation(pb.GetReservationRequest(reservation_id="nope"), metadata=AUTH),
        apis.stub.Release(pb.ReleaseRequest(reservation_id="nope"), metadata=AUTH),
        apis.stub.ExtendReservation(
            pb.ExtendReservationRequest(reservation_id="nope", expires_in_s=60), metadata=AUTH
        ),
    ):
        assert await status_of(call) == (grpc.StatusCode.NOT_FOUND, "no reservation 'nope'")

    events = await reservation_events(settings)
    assert [(e["type"], e.get("expires_at")) for e in events] == [
        ("reservation.created", made.expires_at),
        ("reservation.created", extended.expires_at),
        ("reservation.released", None),
    ]


async def test_expired_reservation_shows_expired_and_cannot_be_extended(apis: Apis) -> None:
    await apis.store.write_records([sku("G-EXP", ("S-1", 1))])
    await apis.stub.Reserve(reserve("g-exp", line("G-EXP", 1), expires_in_s=1), metadata=AUTH)
    await asyncio.sleep(1.1)
    get = pb.GetReservationRequest(reservation_id="g-exp")
    assert (await apis.stub.GetReservation(get, metadata=AUTH)).status == (
        pb.RESERVATION_STATUS_EXPIRED
    )
    extend = pb.ExtendReservationRequest(reservation_id="g-exp", expires_in_s=60)
    code, _ = await status_of(apis.stub.ExtendReservation(extend, metadata=AUTH))
    assert code == grpc.StatusCode.FAILED_PRECONDITION


BAD_REQUESTS: list[tuple[pb.ReserveRequest, str]] = [
    (pb.ReserveRequest(expires_in_s=60, lines=[line("A", 1)]), "reservation_id must be"),
    (reserve("r", line("A", 0)), "lines[0].quantity must be an integer from 1 to 1000000000"),
    (reserve("r", line("A", 1), line("bad sku", 1)), "lines[1].sku must be"),
    (reserve("r", line("A", 1, "")), "lines[0].location_id must be"),
    (reserve("r", line("A", 1), expires_in_s=0), "expires_in_s must be an integer from 1"),
    (reserve("r", line("A", 1), expires_in_s=14_401), "expires_in_s must be"),
    (reserve("r", line("A", 1), line("A", 2)), "repeated: A"),
    (reserve("r"), "lines must be a list of 1 to 100 lines"),
    (reserve("r", *[line(f"S{n}", 1) for n in range(101)]), "lines must be a list of 1 to 100"),
    (
        pb.ReserveRequest(
            reservation_id="r", channel="Online", expires_in_s=5, lines=[line("A", 1)]
        ),
        "channel must be",
    ),
    (reserve("r/1", line("A", 1)), "reservation_id must be 1-128 characters of [A-Za-z0-9._:-]"),
]


async def test_bad_input_is_invalid_argument_naming_the_field(apis: Apis) -> None:
    for request, named in BAD_REQUESTS:
        code, details = await status_of(apis.stub.Reserve(request, metadata=AUTH))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (request, details)
        assert named in details, (named, details)
        # The HTTP API says the same of the same request.
        body = reservation_dict_of_request(request)
        answer = await apis.http.post("/v1/reservations", json=body)
        assert answer.status_code == 400 and answer.json()["error"]["message"] == details
    for call, named in (
        (apis.stub.GetReservation(pb.GetReservationRequest(), metadata=AUTH), "reservation_id"),
        (
            apis.stub.Release(pb.ReleaseRequest(reservation_id="a b"), metadata=AUTH),
            "reservation_id must be",
        ),
        (
            apis.stub.ExtendReservation(
                pb.ExtendReservationRequest(reservation_id="r", expires_in_s=-5), metadata=AUTH
            ),
            "expires_in_s must be an integer from 1 to 14400, got -5",
        ),
    ):
        code, details = await status_of(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and named in details, details
    garbage = apis.channel.unary_unary("/availability.v1.AvailabilityService/Reserve")
    code, details = await status_of(garbage(b"\xff\xff\xff", metadata=AUTH))
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "the request is not a valid availability.v1.ReserveRequest message",
    )


def reservation_dict_of_request(request: pb.ReserveRequest) -> dict[str, Any]:
    """The HTTP body of a gRPC request (proto3's empty channel is the default)."""
    lines = []
    for x in request.lines:
        entry: dict[str, Any] = {"sku": x.sku, "quantity": x.quantity}
        if x.HasField("location_id"):
            entry["location_id"] = x.location_id
        lines.append(entry)
    return {
        "reservation_id": request.reservation_id,
        "channel": request.channel or "online",
        "expires_in_s": request.expires_in_s,
        "lines": lines,
    }


async def test_each_api_sees_and_settles_the_others_reservations(apis: Apis) -> None:
    await apis.store.write_records([sku("G-X", ("S-1", 5))])
    # Made through HTTP, read, replayed, extended and released through gRPC.
    body = reserve_body("x-http", {"sku": "G-X", "quantity": 2})
    made = await apis.http.post("/v1/reservations", json=body)
    assert made.status_code == 201, made.text
    seen = await apis.stub.GetReservation(
        pb.GetReservationRequest(reservation_id="x-http"), metadata=AUTH
    )
    assert reservation_dict(seen) == made.json()
    replay = await apis.stub.Reserve(reserve("x-http", line("G-X", 2)), metadata=AUTH)
    assert replay.replayed and reservation_dict(replay.reservation) == made.json()
    conflict = await refused(apis.stub.Reserve(reserve("x-http", line("G-X", 1)), metadata=AUTH))
    assert conflict.code() == grpc.StatusCode.ALREADY_EXISTS
    extend = pb.ExtendReservationRequest(reservation_id="x-http", expires_in_s=900)
    extended = await apis.stub.ExtendReservation(extend, metadata=AUTH)
    assert (await apis.http.get("/v1/reservations/x-http")).json() == reservation_dict(extended)
    await apis.stub.Release(pb.ReleaseRequest(reservation_id="x-http"), metadata=AUTH)
    assert (await apis.http.get("/v1/reservations/x-http")).json()["status"] == "released"

    # Made through gRPC, read, replayed and released through HTTP.
    grpc_made = await apis.stub.Reserve(reserve("x-grpc", line("G-X", 3)), metadata=AUTH)
    shown = await apis.http.get("/v1/reservations/x-grpc")
    assert shown.json() == reservation_dict(grpc_made.reservation)
    again = await apis.http.post(
        "/v1/reservations", json=reserve_body("x-grpc", {"sku": "G-X", "quantity": 3})
    )
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == shown.json()
    # Both APIs share one stock: 5 - 3 held leaves 2, whichever API asks.
    code, _ = await status_of(apis.stub.Reserve(reserve("x-3", line("G-X", 3)), metadata=AUTH))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert (await apis.http.delete("/v1/reservations/x-grpc")).status_code == 204
    released = await apis.stub.GetReservation(
        pb.GetReservationRequest(reservation_id="x-grpc"), metadata=AUTH
    )
    assert released.status == pb.RESERVATION_STATUS_RELEASED
    assert (await apis.stub.Release(pb.ReleaseRequest(reservation_id="x-grpc"), metadata=AUTH)
            ).already_released  # fmt: skip
    assert (await apis.stub.Reserve(reserve("x-3", line("G-X", 3)), metadata=AUTH)).reservation


async def test_grpc_reserves_are_counted_by_outcome(apis: Apis, settings: Settings) -> None:
    await apis.store.write_records([sku("G-M", ("S-1", 1))])
    await apis.stub.Reserve(reserve("m-1", line("G-M", 1)), metadata=AUTH)
    await apis.stub.Reserve(reserve("m-1", line("G-M", 1)), metadata=AUTH)
    await status_of(apis.stub.Reserve(reserve("m-2", line("G-M", 1)), metadata=AUTH))
    await status_of(apis.stub.Reserve(reserve("m-1", line("G-M", 2)), metadata=AUTH))
    await apis.stub.Release(pb.ReleaseRequest(reservation_id="m-1"), metadata=AUTH)
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{settings.grpc_metrics_port}/metrics")).text
        http_text = (await apis.http.get("/metrics")).text

    def counts(page: str) -> dict[str, float]:
        pattern = r'availability_reservations_total\{api="(\w+)",outcome="(\w+)"\} (\S+)'
        return {f"{api}/{outcome}": float(n) for api, outcome, n in re.findall(pattern, page)}

    assert counts(text) == {
        "grpc/created": 1.0,
        "grpc/repeated": 1.0,
        "grpc/insufficient_stock": 1.0,
        "grpc/conflict": 1.0,
        "grpc/unavailable": 0.0,
    }
    assert 'availability_reservation_releases_total{api="grpc"} 1.0' in text
    # Every request got through the claim; only the one placed went further.
    phases = re.findall(
        r'availability_reservation_phase_seconds_count\{api="grpc",phase="(\w+)"\} (\S+)', text
    )
    assert dict(phases) == {"claim": "4.0", "hold": "1.0", "publish": "1.0", "confirm": "1.0"}
    assert set(counts(http_text).values()) == {0.0}  # the HTTP API's own, untouched
    calls = re.findall(
        r'availability_grpc_requests_total\{code="(\w+)",method="(\w+)"\} (\S+)', text
    )
    assert sorted(calls) == [
        ("ALREADY_EXISTS", "Reserve", "1.0"),
        ("FAILED_PRECONDITION", "Reserve", "1.0"),
        ("OK", "Release", "1.0"),
        ("OK", "Reserve", "2.0"),
    ]


async def test_broker_or_redis_away_is_unavailable_and_nothing_held(
    settings: Settings, start_service: StartService, redis_url: str, tmp_path: Path
) -> None:
    # No broker on this port: the hold is placed, the publish fails, it is taken back.
    no_broker = settings.model_copy(
        update={
            "broker": f"kafka://127.0.0.1:{free_port()}",
            "grpc_port": free_port(),
            "grpc_metrics_port": free_port(),
            "reservation_publish_timeout": 1.0,
        }
    )
    process = start_service("services.grpc", no_broker, name="grpc-no-broker")
    store = AvailabilityStore.from_url(settings.redis_url, settings.redis_key_prefix)
    try:
        await store.write_records([sku("G-OUT", ("S-1", 5))])
        async with grpc.aio.insecure_channel(f"127.0.0.1:{no_broker.grpc_port}") as channel:
            await wait_serving(channel, process)
            call = channel.unary_unary(
                "/availability.v1.AvailabilityService/Reserve",
                request_serializer=pb.ReserveRequest.SerializeToString,
                response_deserializer=pb.ReserveResponse.FromString,
            )
            code, details = await status_of(
                call(reserve("out-1", line("G-OUT", 5)), metadata=AUTH, timeout=20)
            )
            assert code == grpc.StatusCode.UNAVAILABLE
            assert details.startswith("the broker did not take the reservation")
            holds = ReservationStore(store)
            assert (await holds.figures(["G-OUT"]))[0][1] == []
            assert await holds.load("out-1") is None
    finally:
        await forget_store(store)

    no_redis = make_settings(
        settings.broker, f"redis://127.0.0.1:{free_port()}/0", tmp_path / "no-redis"
    )
    process = start_service("services.grpc", no_redis, name="grpc-no-redis")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{no_redis.grpc_port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        call = channel.unary_unary(
            "/availability.v1.AvailabilityService/Reserve",
            request_serializer=pb.ReserveRequest.SerializeToString,
            response_deserializer=pb.ReserveResponse.FromString,
        )
        code, details = await status_of(
            call(reserve("out-2", line("G-OUT", 1)), metadata=AUTH, timeout=20)
        )
        assert (code, details) == (
            grpc.StatusCode.UNAVAILABLE,
            "the serving store (Redis) cannot be reached",
        )
    assert process.running


async def test_a_request_racing_one_being_placed_is_aborted(apis: Apis) -> None:
    """A reservation id claimed by a request still placing its holds (here: claimed
    the way the service claims it, as another API process would be doing)."""
    request = reserve("g-race", line("G-RACE", 1))
    placing = {"fp": parse_reserve(request).fingerprint(), "state": "placing"}
    assert await ReservationStore(apis.store).claim("g-race", placing, 10_000) is None
    code, details = await status_of(apis.stub.Reserve(request, metadata=AUTH))
    assert (code, details) == (
        grpc.StatusCode.ABORTED,
        "reservation 'g-race' is being placed by another request; retry",
    )
    get = pb.GetReservationRequest(reservation_id="g-race")
    assert await status_of(apis.stub.GetReservation(get, metadata=AUTH)) == (
        grpc.StatusCode.ABORTED,
        "reservation 'g-race' is being placed; retry",
    )
    # Another body under the id is a conflict, placed or not.
    other = reserve("g-race", line("G-RACE", 2))
    code, _ = await status_of(apis.stub.Reserve(other, metadata=AUTH))
    assert code == grpc.StatusCode.ALREADY_EXISTS
