"""The first step of every input message: read it into an event, or say why it is
refused.

Nothing a message holds may stop the worker: a message that is not a valid event
is refused with the validation's reason (``availability.events``), one dated too far
in the future or too old with its own (``events.check_time``, with the worker's
clock), and any other failure while reading it (a bug, not bad input) with an
``internal_error`` reason. A refused message becomes a dead letter.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from availability.events import (
    Event,
    InvalidEvent,
    check_time,
    event_to_dict,
    invalid_kind,
    parse_event,
)
from availability.journal import MAX_ENTRY_BYTES
from infra.dead_letters import failure_reason


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a message is dead-lettered; ``kind`` is the bounded metric label."""

    reason: str
    kind: str
    event_id: str | None = None
    sku: str | None = None

    @classmethod
    def of(cls, exc: InvalidEvent) -> Refusal:
        return cls(exc.reason, exc.kind, exc.event_id, exc.sku)

    @classmethod
    def failure(
        cls, stage: str, exc: BaseException, event_id: str | None = None, sku: str | None = None
    ) -> Refusal:
        reason = failure_reason(stage, exc)
        return cls(reason, invalid_kind(reason), event_id, sku)


@dataclass(frozen=True, slots=True)
class Clock:
    """The times the checks need, in µs: now, the future skew, the horizon."""

    now: int
    max_future_skew: int
    horizon: int

    @property
    def settle_before(self) -> int:
        """Baselines dated at or before this are settled (``availability.state``)."""
        return self.now - self.max_future_skew

    @property
    def forget_before(self) -> int:
        return self.now - self.horizon


def read_event(value: bytes | None, clock: Clock) -> Event | Refusal:
    """The event a message holds, or why it is refused."""
    try:
        event = parse_event(value)
        check_time(event, clock.now, clock.max_future_skew, clock.horizon)
        return event
    except InvalidEvent as exc:
        return Refusal.of(exc)
    except Exception as exc:
        return Refusal.failure("reading the event", exc)


def forwarded_value(event: Event, value: bytes) -> bytes:
    """What is forwarded to the re-key topic: the message as it came, or its
    canonical JSON when that is larger than a journal entry may be (an event with
    megabytes of unknown fields), so that the forwarded record always fits."""
    return value if len(value) <= MAX_ENTRY_BYTES else orjson.dumps(event_to_dict(event))
