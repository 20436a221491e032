"""``baseline show`` and ``baseline reset``: a location's ERP baseline as the workers
hold it, and an operator's fresh count that replaces it (README "Baseline reset").

``show`` folds the SKU's state back from the workers' journal, as the drift check
does (``services.cli.drift.load_states``). ``reset`` publishes an
``erp.baseline_reset`` event to the ERP topic, keyed by the SKU: its fold makes the
count the location's baseline as of now and voids the named balances for good (by
default the current baseline when it is dated in the future, the one that pins the
location). The operator's name is recorded in the event.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from availability.events import MAX_VOIDS, ErpBaselineReset, event_from_dict, event_to_dict
from availability.identifiers import (
    MAX_ID_LENGTH,
    MAX_QUANTITY,
    format_timestamp,
    is_location,
    is_sku,
)
from availability.state import Baseline, SkuState
from infra.config import Settings
from infra.kafka import kafka_client_options
from services.cli.dead_letters import UsageError
from services.cli.drift import load_states
from services.cli.text import table

Say = Callable[[str], None]


def _now() -> int:
    return time.time_ns() // 1000


def reset_event(
    *,
    sku: str,
    location_id: str,
    on_hand: int,
    voids: Sequence[str],
    operator: str,
    now: int,
) -> ErpBaselineReset:
    """The reset to publish (validated as the worker will); UsageError if it is not
    one."""
    if not is_sku(sku):
        raise UsageError("--sku must be 1-128 characters of [A-Za-z0-9._:/-]")
    if not is_location(location_id):
        raise UsageError("--location must be 1-64 characters of [A-Za-z0-9._:/-]")
    if not 0 <= on_hand <= MAX_QUANTITY:
        raise UsageError(f"--on-hand must be from 0 to {MAX_QUANTITY}")
    if not 0 < len(operator) <= MAX_ID_LENGTH:
        raise UsageError(f"--operator must be 1-{MAX_ID_LENGTH} characters")
    if len(voids) > MAX_VOIDS:
        raise UsageError(f"at most {MAX_VOIDS} --void")
    event_id = f"reset-{format_timestamp(now)}-{uuid.uuid4().hex[:12]}"
    data = {
        "event_id": event_id,
        "type": "erp.baseline_reset",
        "sku": sku,
        "location_id": location_id,
        "on_hand": on_hand,
        "as_of": format_timestamp(now),
        "voids": list(voids),
        "operator": operator,
    }
    try:
        event = event_from_dict(data)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    assert isinstance(event, ErpBaselineReset)
    return event


def default_voids(state: SkuState | None, location_id: str, now: int) -> list[str]:
    """The current baseline when it is dated in the future (it pins the location)."""
    baseline = None if state is None else state.baselines.get(location_id)
    return [baseline.event_id] if baseline is not None and baseline.as_of > now else []


async def publish_reset(settings: Settings, event: ErpBaselineReset) -> tuple[int, int]:
    """Publish ``event`` to the ERP topic keyed by its SKU; (partition, offset)."""
    producer = AIOKafkaProducer(**kafka_client_options(settings), acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            settings.erp_topic,
            value=orjson.dumps(event_to_dict(event)),
            key=event.sku.encode(),
        )
        return sent.partition, sent.offset
    finally:
        await producer.stop()


async def reset_baseline(
    settings: Settings,
    *,
    sku: str,
    location_id: str,
    on_hand: int,
    voids: Sequence[str] | None,
    operator: str,
    say: Say,
) -> int:
    """``voids`` None: the default (``default_voids``, from the journal)."""
    now = _now()
    if voids is None:
        states = await load_states(settings, say)
        voids = default_voids(states.get(sku), location_id, now)
    event = reset_event(
        sku=sku, location_id=location_id, on_hand=on_hand, voids=voids, operator=operator, now=now
    )
    partition, offset = await publish_reset(settings, event)
    say(
        f"published {event.event_id} to {settings.erp_topic}[{partition}]@{offset}: {sku} at"
        f" {location_id} has {on_hand} as of {format_timestamp(event.as_of)}"
        + (f", voiding {', '.join(event.voids)}" if event.voids else "")
        + f" (operator {operator})"
    )
    say(
        "the workers apply it within seconds; a worker more than"
        f" {settings.max_future_skew:.0f} s behind refuses it as too old (dead letter"
        " reason too_old): run the command again once it has caught up"
    )
    return 0


def _row(location_id: str, kind: str, candidate: Baseline, now: int) -> list[str]:
    when = format_timestamp(candidate.as_of)
    if candidate.as_of > now:
        when += " (future)"
    return [location_id, kind, candidate.event_id, str(candidate.on_hand), when]


def baseline_rows(state: SkuState, location_id: str | None, now: int) -> list[list[str]]:
    rows = [["LOCATION", "ROLE", "EVENT", "ON HAND", "AS OF"]]
    for location in state.locations():
        if location_id is not None and location != location_id:
            continue
        current = state.baselines.get(location)
        voided = state.voided.get(location, frozenset())
        candidates: list[tuple[str, Baseline]] = []
        settled = state.settled.get(location)
        if settled is not None:
            candidates.append(("settled", settled))
        candidates.extend(("pending", c) for c in state.pending.get(location, {}).values())
        candidates.sort(key=lambda item: (item[1].as_of, item[1].event_id), reverse=True)
        for kind, candidate in candidates:
            role = "BASELINE" if candidate == current else kind
            if candidate.event_id in voided:
                role = "voided"
            rows.append(_row(location, role, candidate, now))
        if not candidates:
            rows.append([location, "none", "-", "-", "-"])
        rows.append([location, "on hand", "", str(state.on_hand(location)), ""])
    return rows


async def show_baselines(
    settings: Settings, *, sku: str, location_id: str | None, as_json: bool, say: Say
) -> int:
    states = await load_states(settings, say if not as_json else (lambda _: None))
    state = states.get(sku)
    if state is None or (location_id is not None and location_id not in state.locations()):
        where = "" if location_id is None else f" at {location_id}"
        say(f"the workers hold no state for {sku}{where}")
        return 1
    now = _now()
    if as_json:
        say(orjson.dumps(_as_json(state, location_id)).decode())
    else:
        say(table(baseline_rows(state, location_id, now)))
    return 0


def _as_json(state: SkuState, location_id: str | None) -> dict[str, Any]:
    def candidate(c: Baseline) -> dict[str, Any]:
        return {"event_id": c.event_id, "on_hand": c.on_hand, "as_of": format_timestamp(c.as_of)}

    locations = {}
    for location in state.locations():
        if location_id is not None and location != location_id:
            continue
        baseline = state.baselines.get(location)
        settled = state.settled.get(location)
        locations[location] = {
            "baseline": None if baseline is None else candidate(baseline),
            "settled": None if settled is None else candidate(settled),
            "pending": [candidate(c) for c in state.pending.get(location, {}).values()],
            "voided": sorted(state.voided.get(location, frozenset())),
            "on_hand": state.on_hand(location),
        }
    return {"sku": state.sku, "locations": locations}
