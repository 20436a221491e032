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


#: ``settle_before`` of a fold that settles every baseline at once (the default).
SETTLE_ALL = 2**63 - 1


def recompute(
    events: list[dict[str, Any]],
    now: int,
    rules: list[dict[str, Any]] | None = None,
    channel: str = "online",
    settle_before: int = SETTLE_ALL,
) -> dict[str, dict[str, Any]]:
    """sku -> the HTTP view for ``channel`` (contract section 6), for valid events.

    ``settle_before`` as in README "Baseline reset": of the baseline candidates (ERP
    balances and resets) dated at or before it, only the latest counts, voided or
    not, and it contains every delta up to its time."""
    unique: dict[tuple[str, str], dict[str, Any]] = {}
    for event in events:
        unique.setdefault((event["sku"], event["event_id"]), event)
    by_sku: dict[str, list[dict[str, Any]]] = {}
    for (sku, _), event in unique.items():
        by_sku.setdefault(sku, []).append(event)
    return {
        sku: _sku_view(sku, sku_events, now, rules or [], channel, settle_before)
        for sku, sku_events in by_sku.items()
    }


def _baselines(
    events: list[dict[str, Any]], settle_before: int
) -> tuple[dict[str, tuple[int, str, int]], dict[str, int]]:
    """location -> the baseline (as_of, event_id, on_hand), and location -> the time
    up to which deltas are contained (the latest candidate at or before
    ``settle_before``)."""
    candidates: dict[str, list[tuple[int, str, int]]] = {}
    voided: dict[str, set[str]] = {}
    for e in events:
        if e["type"] in ("erp.balance", "erp.baseline_reset"):
            candidates.setdefault(e["location_id"], []).append(
                (_ts(e["as_of"]), e["event_id"], e["on_hand"])
            )
        if e["type"] == "erp.baseline_reset":
            voided.setdefault(e["location_id"], set()).update(e.get("voids") or [])
    baselines: dict[str, tuple[int, str, int]] = {}
    cuts: dict[str, int] = {}
    for location, found in candidates.items():
        void = voided.get(location, set())
        old = [c for c in found if c[0] <= settle_before]
        eligible = [c for c in found if c[0] > settle_before and c[1] not in void]
        if old:
            latest = max(old, key=lambda c: c[:2])
            cuts[location] = latest[0]
            if latest[1] not in void:
                eligible.append(latest)
        if eligible:
            baselines[location] = max(eligible, key=lambda c: c[:2])
    return baselines, cuts


def _sku_view(
    sku: str,
    events: list[dict[str, Any]],
    now: int,
    rules: list[dict[str, Any]],
    channel: str,
    settle_before: int,
) -> dict[str, Any]:
    baselines, cuts = _baselines(events, settle_before)

    deltas: list[tuple[str, int, int]] = []  # (location, occurred_at, delta)
    damaged: dict[str, int] = {}
    transit: dict[str, int] = {}
    locations: set[str] = {
        e["location_id"] for e in events if e["type"] in ("erp.balance", "erp.baseline_reset")
    }
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
        floor = max(cuts.get(location, -(2**63)), -(2**63) if baseline is None else baseline[0])
        if occurred > floor:
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
