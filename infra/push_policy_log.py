"""The push policies log: a one-partition, compacted topic keyed by ``policy_id``
(``availability.push_policies``; ``infra.policy_log``), folded by every API replica
and every push process into a ``PushPolicyBook``, audited as ``push_policy:<id>``."""

from __future__ import annotations

from typing import Any, ClassVar

from availability.push_policy import PushPolicy, PushPolicyBook, parse_push_policy
from infra.config import Settings
from infra.policy_log import PolicyChange, PolicyLog, TooManyPolicies


class PushPolicyLog(PolicyLog[PushPolicy]):
    kind: ClassVar[str] = "push_policy"
    audit_prefix: ClassVar[str] = "push_policies"
    book: PushPolicyBook

    def __init__(self, settings: Settings, on_change: PolicyChange | None = None) -> None:
        super().__init__(
            settings,
            settings.push_policies_topic,
            "push-policies-log",
            PushPolicyBook(),
            settings.push_max_policies,
            on_change,
        )

    def parse(self, policy_id: str, data: object) -> PushPolicy:
        return parse_push_policy(policy_id, data)  # InvalidPushPolicy is a ValueError

    def id_of(self, policy: PushPolicy) -> str:
        return policy.policy_id

    def to_data(self, policy: PushPolicy) -> dict[str, Any]:
        return policy.to_data()

    def limit_error(self) -> Exception:
        return TooManyPolicies(self.max_count, "push policies")
