"""``/v1/rules``: safety-stock and channel-buffer rules (contract section 4), served
as a policy resource (``services.http.policy_routes``)."""

from __future__ import annotations

from services.http import schemas
from services.http.policy_routes import PolicyResource, policy_router

RULES = PolicyResource(
    prefix="/v1/rules",
    tag="rules",
    noun="rule",
    list_key="rules",
    id_name="rule_id",
    limit_setting="AVAILABILITY_MAX_RULES",
    put_description=(
        "The body may omit `rule_id` or repeat the path's. Absent fields mean null. "
        "A scope (sku, location_id) holds at most one rule: a rule for a scope that "
        "another rule holds is refused with 409. Availability reads reflect the change "
        "within a second."
    ),
    log_of=lambda services: services.rules.log,
    item=schemas.Rule,
    body=schemas.RuleBody,
    listing=schemas.RuleList,
    history=schemas.RuleHistory,
)

router = policy_router(RULES)
