"""``/v1/push-policies``: when changes are pushed to the shops (README "Shopify
push"), served as a policy resource (``services.http.policy_routes``) with the same
semantics and errors as ``/v1/rules``."""

from __future__ import annotations

from typing import Any

from infra.policy_log import PolicyLog
from services.http.errors import ApiError
from services.http.policy_routes import PolicyResource, policy_router
from services.http.resources import Services
from services.http.schemas_push import PushPolicy, PushPolicyBody, PushPolicyHistory, PushPolicyList


def _policies(services: Services) -> PolicyLog[Any]:
    if services.push_policies is None:  # pragma: no cover - the app always sets it
        raise ApiError.unavailable("push policies are not served by this process")
    return services.push_policies


PUSH_POLICIES = PolicyResource(
    prefix="/v1/push-policies",
    tag="push policies",
    noun="push policy",
    list_key="policies",
    id_name="policy_id",
    limit_setting="AVAILABILITY_PUSH_MAX_POLICIES",
    put_description=(
        "The body may omit `policy_id` or repeat the path's. Absent fields mean null. "
        "A scope (sku, location_id) holds at most one policy: a policy for a scope that "
        "another holds is refused with 409. The most specific matching policy applies "
        "whole; with none, every change is pushed at once."
    ),
    log_of=_policies,
    item=PushPolicy,
    body=PushPolicyBody,
    listing=PushPolicyList,
    history=PushPolicyHistory,
)

router = policy_router(PUSH_POLICIES)
