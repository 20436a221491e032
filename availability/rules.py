"""Safety-stock and channel-buffer rules (contract section 4).

A rule's scope is its ``(sku, location_id)``, each ``None`` meaning "any"; one
scope holds at most one rule. ``RuleBook`` is the folded state of the rules log:
the stream processor and every API replica fold the same log and so agree on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from availability.display import preview
from availability.identifiers import (
    MAX_QUANTITY,
    is_channel,
    is_location,
    is_rule_id,
    is_sku,
)

Scope = tuple[str | None, str | None]

_EMPTY: Mapping[str, int] = MappingProxyType({})
_RULE_FIELDS = frozenset({"rule_id", "sku", "location_id", "safety_stock", "channel_buffers"})


class InvalidRule(ValueError):
    """A rule body that cannot be stored; ``problems`` lists every field at fault."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Rule:
    rule_id: str
    sku: str | None = None
    location_id: str | None = None
    safety_stock: int | None = None
    channel_buffers: Mapping[str, int] | None = None

    @property
    def scope(self) -> Scope:
        return (self.sku, self.location_id)

    def to_data(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "sku": self.sku,
            "location_id": self.location_id,
            "safety_stock": self.safety_stock,
            "channel_buffers": None
            if self.channel_buffers is None
            else dict(sorted(self.channel_buffers.items())),
        }


def _is_amount(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_QUANTITY


def parse_rule(rule_id: str, body: object) -> Rule:
    """Validate a rule body (as sent to ``PUT /v1/rules/{rule_id}``).

    Absent fields mean ``null``. Unknown fields are refused, so that a misspelt
    field does not silently become "any".
    """
    problems: list[str] = []
    if not is_rule_id(rule_id):
        problems.append("rule_id must be 1-128 characters of [A-Za-z0-9._:-]")
    if not isinstance(body, dict):
        raise InvalidRule([*problems, "the rule must be a JSON object"])
    unknown = sorted(set(body) - _RULE_FIELDS)
    if unknown:
        problems.append(f"unknown field(s): {', '.join(unknown)}")
    if body.get("rule_id") is not None and body["rule_id"] != rule_id:
        problems.append(f"rule_id in the body ({preview(body['rule_id'])}) differs from the path")
    sku = body.get("sku")
    if sku is not None and not is_sku(sku):
        problems.append("sku must be null or 1-128 characters of [A-Za-z0-9._:/-]")
    location_id = body.get("location_id")
    if location_id is not None and not is_location(location_id):
        problems.append("location_id must be null or 1-64 characters of [A-Za-z0-9._:/-]")
    safety_stock = body.get("safety_stock")
    if safety_stock is not None and not _is_amount(safety_stock):
        problems.append(f"safety_stock must be null or an integer from 0 to {MAX_QUANTITY}")
    buffers = body.get("channel_buffers")
    parsed_buffers: dict[str, int] | None = None
    if buffers is not None:
        if not isinstance(buffers, dict):
            problems.append("channel_buffers must be null or an object {channel: integer}")
        else:
            parsed_buffers = {}
            for channel, amount in buffers.items():
                if not is_channel(channel):
                    problems.append(f"channel {preview(channel)} must match [a-z0-9_-]{{1,32}}")
                elif not _is_amount(amount):
                    problems.append(
                        f"channel_buffers[{preview(channel)}] must be an integer"
                        f" from 0 to {MAX_QUANTITY}"
                    )
                else:
                    parsed_buffers[channel] = amount
    if problems:
        raise InvalidRule(problems)
    return Rule(
        rule_id=rule_id,
        sku=sku,
        location_id=location_id,
        safety_stock=safety_stock,
        channel_buffers=None if parsed_buffers is None else MappingProxyType(parsed_buffers),
    )


@dataclass(frozen=True, slots=True)
class ResolvedRules:
    safety_stock: int
    channel_buffers: Mapping[str, int]

    def buffer(self, channel: str) -> int:
        return self.channel_buffers.get(channel, 0)


NO_RULES = ResolvedRules(0, _EMPTY)


class RuleBook:
    """All rules, indexed by id and by scope."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self._by_id: dict[str, Rule] = {}
        self._by_scope: dict[Scope, Rule] = {}
        for rule in rules:
            if not self.put(rule):
                raise ValueError(
                    f"rule {preview(rule.rule_id)} conflicts with another rule's scope"
                )

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, rule_id: str) -> Rule | None:
        return self._by_id.get(rule_id)

    def all(self) -> list[Rule]:
        return [self._by_id[rule_id] for rule_id in sorted(self._by_id)]

    def conflict(self, rule: Rule) -> Rule | None:
        """The other rule that already holds ``rule``'s scope, if any."""
        holder = self._by_scope.get(rule.scope)
        return holder if holder is not None and holder.rule_id != rule.rule_id else None

    def put(self, rule: Rule) -> bool:
        """Store or replace ``rule``; False (and nothing changes) on a scope conflict."""
        if self.conflict(rule) is not None:
            return False
        previous = self._by_id.get(rule.rule_id)
        if previous is not None:
            del self._by_scope[previous.scope]
        self._by_id[rule.rule_id] = rule
        self._by_scope[rule.scope] = rule
        return True

    def delete(self, rule_id: str) -> Rule | None:
        previous = self._by_id.pop(rule_id, None)
        if previous is not None:
            del self._by_scope[previous.scope]
        return previous

    def resolve(self, sku: str, location_id: str) -> ResolvedRules:
        """Most specific first: (sku, loc) > (sku, any) > (any, loc) > (any, any)."""
        by_scope = self._by_scope
        if not by_scope:
            return NO_RULES
        matching = [
            rule
            for rule in (
                by_scope.get((sku, location_id)),
                by_scope.get((sku, None)),
                by_scope.get((None, location_id)),
                by_scope.get((None, None)),
            )
            if rule is not None
        ]
        if not matching:
            return NO_RULES
        safety_stock = next(
            (rule.safety_stock for rule in matching if rule.safety_stock is not None), 0
        )
        buffers: dict[str, int] = {}
        for rule in reversed(matching):  # least specific first, so specific ones win
            if rule.channel_buffers:
                buffers.update(rule.channel_buffers)
        return ResolvedRules(safety_stock, MappingProxyType(buffers) if buffers else _EMPTY)
