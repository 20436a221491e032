"""The rules log: a one-partition, compacted topic keyed by ``rule_id``
(``infra.policy_log``: folded by every API replica and every worker into a
``RuleBook``, audited by the audit relay)."""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from availability.rules import Rule, RuleBook, parse_rule
from infra.config import Settings
from infra.policy_log import MAX_CHANGES_KEPT, Change, PolicyChange, PolicyLog, TooManyPolicies

__all__ = ["MAX_CHANGES_KEPT", "Change", "RulesLog", "encode_rule"]

RuleChange = PolicyChange


def encode_rule(rule: Rule) -> bytes:
    return orjson.dumps(rule.to_data())


class RulesLog(PolicyLog[Rule]):
    kind: ClassVar[str] = "rule"
    audit_prefix: ClassVar[str] = "rules"
    book: RuleBook

    def __init__(self, settings: Settings, on_change: RuleChange | None = None) -> None:
        super().__init__(
            settings, settings.rules_topic, "rules-log", RuleBook(), settings.max_rules, on_change
        )

    def parse(self, policy_id: str, data: object) -> Rule:
        return parse_rule(policy_id, data)  # InvalidRule is a ValueError

    def id_of(self, policy: Rule) -> str:
        return policy.rule_id

    def to_data(self, policy: Rule) -> dict[str, Any]:
        return policy.to_data()

    def limit_error(self) -> Exception:
        # Every worker and API replica folds every rule into memory and consults them
        # for every SKU-location it computes.
        return TooManyPolicies(self.max_count, "rules")
