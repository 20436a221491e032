"""A seeded generator of input messages for the event fuzz test: valid events, and
messages that are wrong in every way a producer can get them wrong.

Every message carries its label, decided by construction and never by the code
under test: ``valid`` ones must be folded (and are what ``tests.reference`` folds),
the others dead-lettered. Times are relative to ``now`` (the worker refuses
transfers and reservation events older than its horizon, and anything dated ahead
of its clock), far from every boundary the worker judges with its own clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import orjson

SKUS = [f"FZ-{n:02d}" for n in range(24)]
LOCATIONS = ["S1", "S2", "W1", "DC-9"]
TOPICS = ("erp", "pos", "transfers", "reservations")
MEGA = 1_500_000  # bytes of an oversized message: more than Kafka's default 1 MiB
OPTIONAL = ("expires_at", "channel", "disposition", "voids")


Mutation = Callable[["Fuzzer", dict[str, Any]], tuple[bytes | None, str]]


@dataclass(frozen=True)
class Message:
    topic: str  # one of TOPICS
    value: bytes | None
    key: bytes | None
    valid: bool
    event: dict[str, Any] | None = None  # the event a valid message holds
    partition: int | None = None  # forced (a wrong one), else the key's
    why: str = ""  # what is wrong with an invalid one

    @property
    def rekeyed(self) -> bool:
        """Valid, but keyed or placed other than by its SKU (moved by the worker)."""
        assert self.event is not None
        return self.key != self.event["sku"].encode() or self.partition is not None


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class Fuzzer:
    def __init__(self, seed: int, now: datetime, partitions: int) -> None:
        self.rnd = random.Random(seed)
        self.now = now
        self.partitions = partitions
        self.counter = 0
        self.valid: list[Message] = []

    # --- valid events ---

    def _id(self) -> str:
        self.counter += 1
        return f"fz-{self.counter:06d}"

    def _recent(self) -> str:
        """Within the last six hours, more than ten minutes back."""
        back = timedelta(
            seconds=self.rnd.randrange(600, 6 * 3600), milliseconds=self.rnd.randrange(1000)
        )
        return stamp(self.now - back)

    def event(self) -> tuple[str, dict[str, Any]]:
        rnd = self.rnd
        sku, loc = rnd.choice(SKUS), rnd.choice(LOCATIONS)
        base = {"event_id": self._id(), "sku": sku}
        roll = rnd.random()
        if roll < 0.12:
            return "erp", {
                **base,
                "type": "erp.balance",
                "location_id": loc,
                "on_hand": rnd.randint(0, 500),
                "as_of": self._recent(),
            }
        if roll < 0.14:
            # An operator's reset, dated just now (a reset is refused once older than
            # the skew, five minutes): voids a balance or nothing.
            voided = rnd.choice(self.valid).event if self.valid and rnd.random() < 0.5 else None
            voids = [] if voided is None else [voided["event_id"]]
            at = self.now - timedelta(seconds=30)
            return "erp", {
                **base,
                "type": "erp.baseline_reset",
                "location_id": loc,
                "on_hand": rnd.randint(0, 500),
                "as_of": stamp(at),
                "voids": voids,
                "operator": "fuzz",
            }
        if roll < 0.45:
            return "pos", {
                **base,
                "type": "pos.sale",
                "location_id": loc,
                "quantity": rnd.randint(1, 5),
                "occurred_at": self._recent(),
            }
        if roll < 0.55:
            return "pos", {
                **base,
                "type": "pos.return",
                "location_id": loc,
                "quantity": rnd.randint(1, 3),
                "occurred_at": self._recent(),
                "disposition": rnd.choice(["sellable", "damaged", None]),
            }
        if roll < 0.7:
            kind = rnd.choice(["transfer.shipped", "transfer.received"])
            return "transfers", {
                **base,
                "type": kind,
                "transfer_id": f"T{rnd.randrange(20)}",
                "from_location": loc,
                "to_location": rnd.choice(LOCATIONS),
                "quantity": rnd.randint(1, 9),
                "occurred_at": self._recent(),
            }
        rid = f"R{rnd.randrange(60)}"
        kind = rnd.choice(
            ["reservation.created"] * 3 + ["reservation.released", "reservation.fulfilled"]
        )
        event: dict[str, Any] = {
            **base,
            "type": kind,
            "reservation_id": rid,
            "location_id": loc,
            "occurred_at": self._recent(),
        }
        if kind != "reservation.released":
            event["quantity"] = rnd.randint(1, 4)
        if kind == "reservation.created":
            expiry = rnd.choice([None, "2100-01-01T00:00:00Z", stamp(self.now - timedelta(days=1))])
            event["expires_at"] = expiry
            event["channel"] = rnd.choice([None, "online", "store"])
        return "reservations", event  # fmt: skip

    def valid_message(self) -> Message:
        topic, event = self.event()
        roll = self.rnd.random()
        key: bytes | None = event["sku"].encode()
        partition = None
        if roll < 0.06:
            key = None
        elif roll < 0.1:
            key = self.rnd.choice([b"WRONG", b"\xff\xfe", b"k" * 5000])
        elif roll < 0.13:
            partition = self.rnd.randrange(self.partitions)  # perhaps the right one
        value = orjson.dumps(event)
        if self.rnd.random() < 0.002:
            # Valid, with megabytes of a field the contract says to ignore.
            value = orjson.dumps({**event, "padding": "x" * MEGA})
        message = Message(topic, value, key, True, event, partition)
        self.valid.append(message)
        return message

    def duplicate(self) -> Message:
        """A valid message again (at least once), perhaps on another topic or key."""
        original = self.rnd.choice(self.valid)
        key = original.key if self.rnd.random() < 0.7 else None
        return Message(self.rnd.choice(TOPICS), original.value, key, True, original.event)

    # --- invalid messages ---

    def invalid(self) -> Message:
        mutation = self.rnd.choice(self.MUTATIONS)
        topic, event = self.event()
        value, why = mutation(self, event)
        key = event["sku"].encode() if self.rnd.random() < 0.8 else self.rnd.choice([None, b"x"])
        if value is None and key is None:
            key = b"x"  # Kafka takes no record without both
        return Message(topic, value, key, False, why=why)

    def _drop_field(self, event: dict[str, Any]) -> tuple[bytes | None, str]:
        required = [f for f in event if f not in OPTIONAL]
        name = self.rnd.choice(required)
        return orjson.dumps({k: v for k, v in event.items() if k != name}), f"no {name}"

    def _wrong_type(self, event: dict[str, Any]) -> tuple[bytes | None, str]:
        name = self.rnd.choice([f for f in event if f not in OPTIONAL])
        numeric = name in ("quantity", "on_hand", "as_of", "occurred_at")
        value = self.rnd.choice([[1], {"a": 1}, True, 3.5, *(["12x", "big"] if numeric else [])])
        if value == "big":  # 10**30: no 64-bit integer
            text = orjson.dumps({**event, name: 0}).replace(
                f'"{name}":0'.encode(), f'"{name}":1{"0" * 30}'.encode()
            )
            return text, f"{name}=10**30"
        return orjson.dumps({**event, name: value}), f"{name}={value!r}"

    def _bad_quantity(self, event: dict[str, Any]) -> tuple[bytes | None, str]:
        name = "on_hand" if "on_hand" in event else "quantity"
        bad = [-1, -(10**9), 10**9 + 1] + ([0] if name == "quantity" else [])
        value = self.rnd.choice(bad)
        if name not in event:  # a release has no quantity: break its time instead
            return self._bad_time(event)
        return orjson.dumps({**event, name: value}), f"{name}={value}"

    def _bad_time(self, event: dict[str, Any]) -> tuple[bytes | None, str]:
        name = "as_of" if "as_of" in event else "occurred_at"
        value = self.rnd.choice([
            "2026-13-45T10:00:00Z", "yesterday", "2026-11-22 10:00:00Z", "2026-11-22T10:00:00",
            "2016-12-31T23:59:60Z", "", "9999-12-31T23:59:59.999999Z",
            stamp(self.now + timedelta(hours=2)),
        ])  # fmt: skip
        return orjson.dumps({**event, name: value}), f"{name}={value}"

    def _too_old(self, event: dict[str, Any]) -> tuple[bytes | None, str]:
        if event["type"] in ("erp.balance", "pos.sale") or (
            event["type"] == "pos.return" and event.get("disposition") != "damaged"
        ):
            return self._bad_time(event)  # these are never too old
        name = "as_of" if "as_of" in event else "occurred_at"
        return orjson.dumps({**event, name: "0001-01-01T00:00:00Z"}), "too old"

    def _garbage(self, event: dict[str, Any]) -> tuple[bytes | None, str]:
        depth = self.rnd.choice([1000, 1025, 20_000])
        choices: list[tuple[bytes | None, str]] = [
            (None, "null value"),
            (b"", "empty value"),
            (b"null", "JSON null"),
            (b"[1, 2]", "an array"),
            (b"\xff\xfe\x00\x01" + bytes(range(256)), "not UTF-8"),
            (b'{"event_id": "\xc3\x28"}', "invalid UTF-8 in a string"),
            (b"[" * depth + b"]" * depth, f"nested {depth} deep"),
            (b'{"a":' * depth + b"1" + b"}" * depth, f"objects nested {depth} deep"),
            (b"{" + b"x" * MEGA if self.rnd.random() < 0.1 else b"{" + b"x" * 2000, "garbage"),
            (orjson.dumps({**event, "type": "pos.teleport"}), "unknown type"),
            (orjson.dumps({**event, "sku": "bad sku!"}), "bad sku"),
            (orjson.dumps({**event, "event_id": "e" * 129}), "long event_id"),
            (orjson.dumps({**event, "sku": ["L"] * 20_000}), "huge list"),
        ]
        return self.rnd.choice(choices)

    MUTATIONS: ClassVar[tuple[Mutation, ...]] = (
        _drop_field, _wrong_type, _bad_quantity, _bad_time, _too_old, _garbage, _garbage,
    )  # fmt: skip

    def messages(self, count: int) -> list[Message]:
        out: list[Message] = []
        while len(out) < count:
            roll = self.rnd.random()
            if roll < 0.55 or not self.valid:
                out.append(self.valid_message())
            elif roll < 0.65:
                out.append(self.duplicate())
            else:
                out.append(self.invalid())
        return out


def fuzz_messages(
    seed: int, count: int, partitions: int, now: datetime | None = None
) -> list[Message]:
    return Fuzzer(seed, now or datetime.now(UTC), partitions).messages(count)
