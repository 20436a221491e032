"""The pure parts of ``services.http`` (no Redis, no broker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest
from aiokafka.errors import KafkaConnectionError
from prometheus_client import CollectorRegistry, generate_latest

from availability.ats import LocationAvailability, SkuAvailability, view
from availability.rules import parse_rule
from infra.config import ApiKeySpec, Settings
from infra.rules_log import RulesLog
from services.auth.api_keys import hash_api_key, new_api_key
from services.auth.scopes import ALL_SCOPES
from services.http import create_app, schemas
from services.http.errors import ApiError, code_for_status, describe_validation_errors
from services.http.metrics import ServingCollector, route_template
from services.http.readiness import OK, assess_workers
from services.http.resources import RulesConnection, describe
from services.http.validation import (
    BATCH_FIELDS,
    MAX_BATCH_SKUS,
    parse_batch_request,
    parse_json,
    require_channel,
    require_location,
    require_rule_id,
    require_sku,
)


def _error(call: Any, *args: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call(*args)
    return caught.value


# --- validation --------------------------------------------------------------------


def test_identifier_checks_return_valid_values() -> None:
    assert require_sku("A/b-1.2:3") == "A/b-1.2:3"
    assert require_channel("market_place-2") == "market_place-2"
    assert require_location("DC:1/a") == "DC:1/a"
    assert require_rule_id("r.1:x-y") == "r.1:x-y"


@pytest.mark.parametrize(
    ("check", "value", "field"),
    [
        (require_sku, "", "sku"),
        (require_sku, "a b", "sku"),
        (require_sku, "x" * 129, "sku"),
        (require_sku, 5, "sku"),
        (require_channel, "Online", "channel"),
        (require_channel, "x" * 33, "channel"),
        (require_location, "x" * 65, "location_id"),
        (require_rule_id, "a/b", "rule_id"),
    ],
)
def test_identifier_checks_name_the_field(check: Any, value: object, field: str) -> None:
    error = _error(check, value)
    assert (error.status_code, error.code) == (400, "invalid_argument")
    assert error.message.startswith(f"{field} must be")


def test_long_values_are_shortened_in_messages() -> None:
    assert len(_error(require_sku, "!" * 10_000).message) < 200


def test_parse_json() -> None:
    assert parse_json(b'{"a": [1]}') == {"a": [1]}
    for body in (b"", b"{", b"\xff", b"[1,]"):
        error = _error(parse_json, body)
        assert (error.status_code, error.code) == (400, "malformed_json")


def test_parse_batch_request() -> None:
    assert parse_batch_request({"skus": ["A", "B", "A"]}) == (["A", "B", "A"], "online")
    assert parse_batch_request({"skus": [], "channel": "store"}) == ([], "store")
    assert parse_batch_request({"skus": ["A"], "channel": None}) == (["A"], "online")
    assert parse_batch_request({"skus": ["S"] * MAX_BATCH_SKUS})[0] == ["S"] * MAX_BATCH_SKUS


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (None, "JSON object"),
        ([], "JSON object"),
        ({}, "skus is required"),
        ({"skus": None}, "skus must be a list"),
        ({"skus": ["A"], "limit": 3}, "unknown field(s): limit"),
        ({"skus": ["A", ""]}, "skus[1]"),
        ({"skus": ["A"], "channel": 3}, "channel"),
        ({"skus": ["S"] * (MAX_BATCH_SKUS + 1)}, "at most 500"),
    ],
)
def test_parse_batch_request_refuses(data: Any, needle: str) -> None:
    error = _error(parse_batch_request, data)
    assert (error.status_code, error.code) == (400, "invalid_argument")
    assert needle in error.message


# --- errors ------------------------------------------------------------------------


def test_code_for_status() -> None:
    assert code_for_status(404) == "not_found"
    assert code_for_status(405) == "method_not_allowed"
    assert code_for_status(413) == "payload_too_large"
    assert code_for_status(415) == "unsupported_media_type"
    assert code_for_status(599) == "internal"
    assert code_for_status(499) == "invalid_argument"


def test_describe_validation_errors() -> None:
    code, message = describe_validation_errors(
        [
            {"type": "string_type", "loc": ("query", "channel"), "msg": "Input should be a string"},
            {"type": "too_long", "loc": ("body", "skus", 3), "msg": "too long"},
        ]
    )
    assert code == "invalid_argument"
    assert message == "channel: Input should be a string; skus[3]: too long"
    assert describe_validation_errors([{"type": "json_invalid", "loc": ("body", 1)}])[0] == (
        "malformed_json"
    )
    assert describe_validation_errors([]) == ("invalid_argument", "invalid request")


def test_describe_exception() -> None:
    assert describe(TimeoutError()) == "TimeoutError"
    assert describe(ValueError("bad")) == "ValueError: bad"

    class BrokerDown(Exception):
        def __str__(self) -> str:
            return "BrokerDown: no route"

    assert describe(BrokerDown()) == "BrokerDown: no route"


# --- readiness ---------------------------------------------------------------------


def test_assess_workers() -> None:
    fine = {"recovered": True, "lag": 10, "lag_by_partition": {}, "ts": 0.0}
    assert assess_workers({"w1": fine, "w2": {**fine, "lag": 100}}, max_lag=100) == OK
    assert "no stream-processor worker" in assess_workers({}, max_lag=100)
    assert "w2 is still recovering" in assess_workers(
        {"w1": fine, "w2": {**fine, "recovered": False}}, max_lag=100
    )
    behind = assess_workers({"w1": {**fine, "lag": 101}}, max_lag=100)
    assert "w1 is 101 events behind" in behind
    assert "reports no lag" in assess_workers({"w1": {"recovered": True}}, max_lag=100)
    assert "reports no lag" in assess_workers({"w1": {**fine, "lag": True}}, max_lag=100)


def test_worker_max_age() -> None:
    assert Settings(heartbeat_interval=1.0).worker_status_max_age == 5.0


# --- metrics -----------------------------------------------------------------------


def test_serving_collector() -> None:
    collector = ServingCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    collector.update(
        {"folded:pos.sale": 3, "folded:erp.balance": 2, "dead_letters:pos.transactions": 1,
         "other": 9},
        {"w-1": {"lag_by_partition": {"t.pos.transactions:0": 4, "t.erp.balances:1": 0}},
         "w-2": {"lag": 0}},
    )  # fmt: skip
    text = generate_latest(registry).decode()
    assert 'availability_events_folded_total{type="pos.sale"} 3.0' in text
    assert 'availability_events_folded_total{type="erp.balance"} 2.0' in text
    assert 'availability_dead_letters_total{topic="pos.transactions"} 1.0' in text
    assert 'availability_consumer_lag{partition="t.pos.transactions:0",worker="w-1"} 4.0' in text
    assert 'availability_consumer_lag{partition="t.erp.balances:1",worker="w-1"} 0.0' in text
    assert "other" not in text
    assert "w-2" not in text

    collector.update({}, {})
    assert "pos.sale" not in generate_latest(registry).decode()


def test_route_template() -> None:
    class Route:
        path = "/v1/availability/{sku:path}"
        path_format = "/v1/availability/{sku}"

    assert route_template({"type": "http", "route": Route()}) == "/v1/availability/{sku}"
    assert route_template({"type": "http"}) == "unmatched"


# --- the app without its lifespan (no Redis, no broker) ----------------------------


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    key = new_api_key()
    settings = Settings(
        auth_api_keys=[ApiKeySpec(id="t", sha256=hash_api_key(key), scopes=ALL_SCOPES)]
    )
    transport = httpx.ASGITransport(app=create_app(settings), raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers={"authorization": f"Bearer {key}"}
    ) as client:
        yield client


async def test_unknown_route_and_wrong_method_are_json_errors(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": {"code": "not_found", "message": "no resource at /nope"}}
    wrong = await client.put("/healthz")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


async def test_unexpected_errors_are_500_without_details(client: httpx.AsyncClient) -> None:
    # Without its lifespan the app has no store: the dependency fails unexpectedly.
    response = await client.get("/v1/availability/A")
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal", "message": "internal error"}}


async def test_healthz_needs_nothing(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}


def test_openapi_shapes() -> None:
    spec = create_app(Settings()).openapi()
    operations = [op for item in spec["paths"].values() for op in item.values()]
    assert all(op.get("summary") for op in operations)
    assert not any("422" in op["responses"] for op in operations)  # we answer 400
    single = spec["paths"]["/v1/availability/{sku}"]["get"]["responses"]
    assert single["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Availability")
    batch = spec["paths"]["/v1/availability:batch"]["post"]
    assert batch["requestBody"]["content"]["application/json"]["schema"]["required"] == ["skus"]


# --- the documentation models describe what the routes do ---------------------------


def test_schemas_match_the_domain() -> None:
    location = LocationAvailability("S1", 5, 1, 0, 0, 1, {"online": 1})
    answer = view(SkuAvailability("A", (location,), None), "online")
    assert list(schemas.Availability.model_fields) == list(answer)
    assert list(schemas.LocationAvailability.model_fields) == list(answer["locations"][0])
    schemas.Availability.model_validate(answer)

    assert set(schemas.BatchRequest.model_fields) == BATCH_FIELDS

    body: dict[str, Any] = {name: None for name in schemas.RuleBody.model_fields}
    rule = parse_rule("r", {**body, "rule_id": "r"})
    assert list(schemas.Rule.model_fields) == list(rule.to_data())


# --- the rules-log connection --------------------------------------------------------


class FakeRulesLog:
    """Fails to start ``failures`` times, then starts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.starts = 0
        self.stops = 0

    async def start(self) -> None:
        self.starts += 1
        if self.starts <= self.failures:
            raise OSError("connection refused")

    async def stop(self) -> None:
        self.stops += 1


def _connection(fake: FakeRulesLog) -> RulesConnection:
    return RulesConnection(cast(RulesLog, fake), max_retry_interval=0.01)


async def test_rules_connection_retries_in_the_background() -> None:
    fake = FakeRulesLog(failures=3)
    connection = _connection(fake)
    await connection.start(wait=0.0)
    assert not connection.started
    with pytest.raises(ApiError) as refused:
        async with connection.operation("listing the rules"):
            pass
    assert (refused.value.status_code, refused.value.code) == (503, "unavailable")

    for _ in range(200):
        if connection.started:
            break
        await asyncio.sleep(0.01)
    assert connection.started
    assert connection.last_error is None
    assert fake.starts == 4
    assert fake.stops == 3  # each failed attempt released what it opened
    await connection.close()
    assert fake.stops == 4


@pytest.mark.parametrize(
    "failure", [TimeoutError(), KafkaConnectionError("down"), ConnectionRefusedError()]
)
async def test_rules_operation_turns_broker_trouble_into_503(failure: Exception) -> None:
    connection = _connection(FakeRulesLog(failures=0))
    await connection.start(wait=1.0)
    assert connection.started
    with pytest.raises(ApiError) as caught:
        async with connection.operation("storing the rule"):
            raise failure
    assert (caught.value.status_code, caught.value.code) == (503, "unavailable")
    assert "storing the rule" in caught.value.message
    # Anything else (a scope conflict, a bug) is not the broker's fault.
    with pytest.raises(ValueError):
        async with connection.operation("storing the rule"):
            raise ValueError("other")
    await connection.close()
