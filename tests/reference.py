"""An independent recomputation of contract sections 3-5, straight from its text.

It works on the whole set of events at once (no incremental fold, no pruning), so
it shares no logic with ``availability.state`` and can check it: the unit tests
compare the fold with it, and the integration tests compare what the HTTP API
serves with it.
"""

from __future__ import annotations

from typing import Any

from availability.identifiers import parse_timestamp


def _ts(value: str) -> int:
    return parse_timestamp(value)


def recompute(
    events: list[dict[str, Any]],
    now: int,
    rules: list[dict[str, Any]] | None = None,
    channel: str = "online",
) -> dict[str, dict[str, Any]]:
    """sku -> the HTTP view for ``channel`` (contract section 6), for valid events."""
    unique: dict[tuple[str, str], dict[str, Any]] = {}
    for event in events:
        unique.setdefault((event["sku"], event["event_id"]), event)
    by_sku: dict[str, list[dict[str, Any]]] = {}
    for (sku, _), event in unique.items():
        by_sku.setdefault(sku, []).append(event)
    return {
        sku: _sku_view(sku, sku_events, now, rules or [], channel)
        for sku, sku_events in by_sku.items()
    }


def _sku_view(
    sku: str, events: list[dict[str, Any]], now: int, rules: list[dict[str, Any]], channel: str
) -> dict[str, Any]:
    baselines: dict[str, tuple[int, str, int]] = {}
    for e in events:
        if e["type"] == "erp.balance":
            candidate = (_ts(e["as_of"]), e["event_id"], e["on_hand"])
            current = baselines.get(e["location_id"])
            if current is None or candidate[:2] > current[:2]:
                baselines[e["location_id"]] = candidate

    deltas: list[tuple[str, int, int]] = []  # (location, occurred_at, delta)
    damaged: dict[str, int] = {}
    transit: dict[str, int] = {}
    locations: set[str] = set(baselines)
    creates: dict[str, dict[str, Any]] = {}
    closed: set[str] = set()
    for e in events:
        kind = e["type"]
        if kind == "pos.sale":
            deltas.append((e["location_id"], _ts(e["occurred_at"]), -e["quantity"]))
        elif kind == "pos.return":
            if e.get("disposition", "sellable") in (None, "sellable"):
                deltas.append((e["location_id"], _ts(e["occurred_at"]), e["quantity"]))
            else:
                damaged[e["location_id"]] = damaged.get(e["location_id"], 0) + e["quantity"]
                locations.add(e["location_id"])
        elif kind == "transfer.shipped":
            deltas.append((e["from_location"], _ts(e["occurred_at"]), -e["quantity"]))
            transit[e["to_location"]] = transit.get(e["to_location"], 0) + e["quantity"]
            locations.update((e["from_location"], e["to_location"]))
        elif kind == "transfer.received":
            deltas.append((e["to_location"], _ts(e["occurred_at"]), e["quantity"]))
            transit[e["to_location"]] = transit.get(e["to_location"], 0) - e["quantity"]
            locations.add(e["to_location"])
        elif kind == "reservation.fulfilled":
            deltas.append((e["location_id"], _ts(e["occurred_at"]), -e["quantity"]))
            closed.add(e["reservation_id"])
        elif kind == "reservation.released":
            closed.add(e["reservation_id"])
        elif kind == "reservation.created":
            current = creates.get(e["reservation_id"])
            key = (_ts(e["occurred_at"]), e["event_id"])
            if current is None or key > (_ts(current["occurred_at"]), current["event_id"]):
                creates[e["reservation_id"]] = e
    locations.update(e["location_id"] for e in creates.values())

    on_hand: dict[str, int] = {}
    for location, occurred, delta in deltas:
        baseline = baselines.get(location)
        locations.add(location)
        if baseline is None or occurred > baseline[0]:
            on_hand[location] = on_hand.get(location, 0) + delta
    reserved: dict[str, int] = {}
    for rid, e in creates.items():
        expires = e.get("expires_at")
        if rid not in closed and (expires is None or _ts(expires) > now):
            reserved[e["location_id"]] = reserved.get(e["location_id"], 0) + e["quantity"]

    rows = []
    for location in sorted(locations):
        safety, buffer = _rules_for(rules, sku, location, channel)
        hand = (baselines[location][2] if location in baselines else 0) + on_hand.get(location, 0)
        res = reserved.get(location, 0)
        rows.append(
            {
                "location_id": location,
                "on_hand": hand,
                "reserved": res,
                "in_transit": max(0, transit.get(location, 0)),
                "damaged": damaged.get(location, 0),
                "safety_stock": safety,
                "buffer": buffer,
                "ats": max(0, hand - res - safety - buffer),
            }
        )
    return {"sku": sku, "channel": channel, "ats": sum(r["ats"] for r in rows), "locations": rows}


def _rules_for(
    rules: list[dict[str, Any]], sku: str, location: str, channel: str
) -> tuple[int, int]:
    def rank(rule: dict[str, Any]) -> int:
        s, loc = rule.get("sku"), rule.get("location_id")
        if s not in (None, sku) or loc not in (None, location):
            return -1
        return {(True, True): 3, (True, False): 2, (False, True): 1, (False, False): 0}[
            (s is not None, loc is not None)
        ]

    matching = sorted((r for r in rules if rank(r) >= 0), key=rank, reverse=True)
    safety = next((r["safety_stock"] for r in matching if r.get("safety_stock") is not None), 0)
    buffer = next(
        (
            r["channel_buffers"][channel]
            for r in matching
            if r.get("channel_buffers") and channel in r["channel_buffers"]
        ),
        0,
    )
    return safety, buffer
