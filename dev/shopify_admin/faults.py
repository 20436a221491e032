"""Faults injected into GraphQL calls: for the next N matching calls, or each matching
call with a probability (seeded, so a run can be repeated).

Kinds:
- ``status``: HTTP 500/502/503 (``phase`` ``before``: nothing ran and nothing was
  charged; ``after``: the call ran -- a mutation was applied -- and its answer is lost).
- ``drop``: the connection is closed without an answer (``before`` or ``after``, as above).
- ``slow``: the answer takes ``seconds`` longer; a mutation holds its idempotency key
  meanwhile, so a retry in that window meets IDEMPOTENCY_CONCURRENT_REQUEST.
- ``internal_error``: Shopify's INTERNAL_SERVER_ERROR (HTTP 200); a mutation's key is
  marked failed, so the same key later answers IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

KINDS: Final = ("status", "drop", "slow", "internal_error")
STATUSES: Final = (500, 502, 503)


class FaultSpecError(ValueError):
    pass


@dataclass
class Fault:
    id: int
    kind: Literal["status", "drop", "slow", "internal_error"]
    phase: Literal["before", "after"] = "before"
    status: int = 500
    seconds: float = 0.0
    remaining: int | None = 1
    probability: float | None = None
    operation: Literal["query", "mutation"] | None = None
    field: str | None = None

    def matches(self, is_mutation: bool, root_fields: tuple[str, ...]) -> bool:
        if self.operation == "mutation" and not is_mutation:
            return False
        if self.operation == "query" and is_mutation:
            return False
        return self.field is None or self.field in root_fields


class Faults:
    def __init__(self, seed: int = 0) -> None:
        self._rules: list[Fault] = []
        self._ids = itertools.count(1)
        self._random = random.Random(seed)

    def add(self, spec: dict[str, Any]) -> Fault:
        kind = spec.get("kind")
        if kind not in KINDS:
            raise FaultSpecError(f"kind must be one of {', '.join(KINDS)}")
        phase = spec.get("phase", "before")
        if phase not in ("before", "after"):
            raise FaultSpecError("phase must be 'before' or 'after'")
        status = int(spec.get("status", 500))
        if kind == "status" and status not in STATUSES:
            raise FaultSpecError(f"status must be one of {STATUSES}")
        probability = spec.get("probability")
        count = spec.get("count", None if probability is not None else 1)
        if probability is not None and not 0 < float(probability) <= 1:
            raise FaultSpecError("probability must be in (0, 1]")
        if count is not None and int(count) < 1:
            raise FaultSpecError("count must be at least 1")
        operation = spec.get("operation")
        if operation not in (None, "query", "mutation"):
            raise FaultSpecError("operation must be 'query' or 'mutation'")
        fault = Fault(
            id=next(self._ids),
            kind=kind,
            phase=phase,
            status=status,
            seconds=float(spec.get("seconds", 0.0)),
            remaining=None if count is None else int(count),
            probability=None if probability is None else float(probability),
            operation=operation,
            field=spec.get("field"),
        )
        if kind == "slow" and fault.seconds <= 0:
            raise FaultSpecError("a slow fault needs seconds > 0")
        self._rules.append(fault)
        return fault

    def clear(self) -> None:
        self._rules.clear()

    def reseed(self, seed: int) -> None:
        self._random = random.Random(seed)

    def listing(self) -> list[dict[str, Any]]:
        return [asdict(f) for f in self._rules]

    def take(self, is_mutation: bool, root_fields: tuple[str, ...]) -> Fault | None:
        """The fault for this call, if any (one per call, the earliest rule first)."""
        for fault in list(self._rules):
            if not fault.matches(is_mutation, root_fields):
                continue
            if fault.probability is not None and self._random.random() >= fault.probability:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._rules.remove(fault)
            return fault
        return None
