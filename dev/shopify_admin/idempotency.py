"""``@idempotent(key:)`` as Shopify documents it for inventorySetQuantities
(shopify.dev "Implementing idempotency" and the mutation's error codes): the same key
with the same input returns the first result without applying twice; the same key with
other input is IDEMPOTENCY_KEY_PARAMETER_MISMATCH; a key whose first request is still
running is IDEMPOTENCY_CONCURRENT_REQUEST; a key whose first attempt failed inside
Shopify is IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED (use a new key).

Keys are kept per shop for the life of the process (Shopify keeps them for a retention
window; tests never outlive it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class KeyState(Enum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass
class KeyRecord:
    fingerprint: str
    state: KeyState
    result: Any = None


@dataclass(frozen=True)
class Begun:
    """The key is new: this request runs (and must finish, fail or forget the key)."""


@dataclass(frozen=True)
class Replay:
    result: Any


@dataclass(frozen=True)
class Conflict:
    code: str
    message: str


CONCURRENT = Conflict(
    "IDEMPOTENCY_CONCURRENT_REQUEST", "This request is currently in progress, please try again."
)
MISMATCH = Conflict(
    "IDEMPOTENCY_KEY_PARAMETER_MISMATCH",
    "The same idempotency key cannot be used with different operation parameters.",
)
PREVIOUS_FAILED = Conflict(
    "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED",
    "A previous request with this idempotency key failed. Retry with a new idempotency key.",
)


@dataclass
class IdempotencyKeys:
    records: dict[str, KeyRecord] = field(default_factory=dict)

    def begin(self, key: str, fingerprint: str) -> Begun | Replay | Conflict:
        record = self.records.get(key)
        if record is None:
            self.records[key] = KeyRecord(fingerprint, KeyState.RUNNING)
            return Begun()
        if record.fingerprint != fingerprint:
            return MISMATCH
        if record.state is KeyState.RUNNING:
            return CONCURRENT
        if record.state is KeyState.FAILED:
            return PREVIOUS_FAILED
        return Replay(record.result)

    def finish(self, key: str, result: Any) -> None:
        self.records[key].state = KeyState.DONE
        self.records[key].result = result

    def fail(self, key: str) -> None:
        self.records[key].state = KeyState.FAILED

    def forget(self, key: str) -> None:
        self.records.pop(key, None)
