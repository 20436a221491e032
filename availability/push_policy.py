"""Push policies: when a change of a SKU-location's figure is pushed to a shop.

A policy's scope is ``(sku, location_id)``, each ``None`` meaning "any", like a rule's
(contract section 4); one scope holds at most one policy. Unlike rules, whose fields
are merged from every matching rule, the **most specific matching policy applies
whole**: a policy is one coherent set of thresholds, and mixing a default's
``min_delta`` with a SKU's ``low_stock`` would give a combination nobody wrote. A
field a policy leaves ``null`` means "no such threshold" (``max_staleness_s``: the
default bound, :data:`DEFAULT_MAX_STALENESS_S`). With no policy at all every change is
pushed at once.

``PushPolicyBook`` is the folded state of the policies log; the push and every API
replica fold the same log and so agree on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from availability.identifiers import MAX_QUANTITY, is_location, is_rule_id, is_sku

Scope = tuple[str | None, str | None]

#: Seconds a difference may wait when the policy sets no ``max_staleness_s``.
DEFAULT_MAX_STALENESS_S: Final = 300.0
#: The longest ``max_staleness_s`` accepted: the push does not commit the change feed
#: past a deferred change, so this bounds what a restart reads again.
MAX_STALENESS_LIMIT_S: Final = 3600.0

_FIELDS: Final = frozenset(
    {
        "policy_id",
        "sku",
        "location_id",
        "low_stock",
        "min_delta",
        "min_delta_pct",
        "max_staleness_s",
    }
)


class InvalidPushPolicy(ValueError):
    """A policy body that cannot be stored; ``problems`` lists every field at fault."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class PushPolicy:
    policy_id: str
    sku: str | None = None
    location_id: str | None = None
    low_stock: int | None = None
    min_delta: int | None = None
    min_delta_pct: float | None = None
    max_staleness_s: float | None = None

    @property
    def scope(self) -> Scope:
        return (self.sku, self.location_id)

    @property
    def staleness(self) -> float:
        """Seconds a difference may wait at most."""
        return DEFAULT_MAX_STALENESS_S if self.max_staleness_s is None else self.max_staleness_s

    def to_data(self) -> dict[str, Any]:
        return {
            "policy_id": self.policy_id,
            "sku": self.sku,
            "location_id": self.location_id,
            "low_stock": self.low_stock,
            "min_delta": self.min_delta,
            "min_delta_pct": self.min_delta_pct,
            "max_staleness_s": self.max_staleness_s,
        }


#: What applies where no policy matches: every change is pushed at once.
PUSH_EVERY_CHANGE: Final = PushPolicy(policy_id="(none)", min_delta=1, max_staleness_s=0.0)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (_is_int(value) or isinstance(value, float)) and value == value  # not NaN


def parse_push_policy(policy_id: str, body: object) -> PushPolicy:
    """Validate a policy body (as sent to ``PUT /v1/push-policies/{policy_id}``).

    Absent fields mean ``null``; unknown fields are refused (a misspelt ``low_stok``
    must not silently mean "no threshold")."""
    problems: list[str] = []
    if not is_rule_id(policy_id):
        problems.append("policy_id must be 1-128 characters of [A-Za-z0-9._:-]")
    if not isinstance(body, dict):
        raise InvalidPushPolicy([*problems, "the policy must be a JSON object"])
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        problems.append(f"unknown field(s): {', '.join(unknown)}")
    if body.get("policy_id") is not None and body["policy_id"] != policy_id:
        problems.append(f"policy_id in the body ({body['policy_id']!r}) differs from the path")
    sku, location_id = body.get("sku"), body.get("location_id")
    if sku is not None and not is_sku(sku):
        problems.append("sku must be null or 1-128 characters of [A-Za-z0-9._:/-]")
    if location_id is not None and not is_location(location_id):
        problems.append("location_id must be null or 1-64 characters of [A-Za-z0-9._:/-]")
    for name in ("low_stock", "min_delta"):
        value = body.get(name)
        if value is not None and not (_is_int(value) and 0 <= value <= MAX_QUANTITY):
            problems.append(f"{name} must be null or an integer from 0 to {MAX_QUANTITY}")
    pct = body.get("min_delta_pct")
    if pct is not None and not (_is_number(pct) and 0 <= pct <= 100):
        problems.append("min_delta_pct must be null or a number from 0 to 100")
    staleness = body.get("max_staleness_s")
    if staleness is not None and not (
        _is_number(staleness) and 0 <= staleness <= MAX_STALENESS_LIMIT_S
    ):
        problems.append(
            "max_staleness_s must be null or a number of seconds"
            f" from 0 to {MAX_STALENESS_LIMIT_S:.0f}"
        )
    if problems:
        raise InvalidPushPolicy(problems)
    return PushPolicy(
        policy_id=policy_id,
        sku=sku,
        location_id=location_id,
        low_stock=body.get("low_stock"),
        min_delta=body.get("min_delta"),
        min_delta_pct=None if pct is None else float(pct),
        max_staleness_s=None if staleness is None else float(staleness),
    )


class PushPolicyBook:
    """All policies, indexed by id and by scope."""

    def __init__(self, policies: Iterable[PushPolicy] = ()) -> None:
        self._by_id: dict[str, PushPolicy] = {}
        self._by_scope: dict[Scope, PushPolicy] = {}
        for policy in policies:
            if not self.put(policy):
                raise ValueError(f"policy {policy.policy_id!r} conflicts with another's scope")

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, policy_id: str) -> PushPolicy | None:
        return self._by_id.get(policy_id)

    def all(self) -> list[PushPolicy]:
        return [self._by_id[policy_id] for policy_id in sorted(self._by_id)]

    def conflict(self, policy: PushPolicy) -> PushPolicy | None:
        holder = self._by_scope.get(policy.scope)
        return holder if holder is not None and holder.policy_id != policy.policy_id else None

    def put(self, policy: PushPolicy) -> bool:
        """Store or replace ``policy``; False (and nothing changes) on a scope conflict."""
        if self.conflict(policy) is not None:
            return False
        previous = self._by_id.get(policy.policy_id)
        if previous is not None:
            del self._by_scope[previous.scope]
        self._by_id[policy.policy_id] = policy
        self._by_scope[policy.scope] = policy
        return True

    def delete(self, policy_id: str) -> PushPolicy | None:
        previous = self._by_id.pop(policy_id, None)
        if previous is not None:
            del self._by_scope[previous.scope]
        return previous

    def resolve(self, sku: str, location_id: str) -> PushPolicy:
        """The most specific matching policy: (sku, loc) > (sku, any) > (any, loc) >
        (any, any); :data:`PUSH_EVERY_CHANGE` when none matches."""
        by_scope = self._by_scope
        if not by_scope:
            return PUSH_EVERY_CHANGE
        for scope in ((sku, location_id), (sku, None), (None, location_id), (None, None)):
            found = by_scope.get(scope)
            if found is not None:
                return found
        return PUSH_EVERY_CHANGE
