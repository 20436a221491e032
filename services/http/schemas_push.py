"""Shapes of the push-policy bodies, for the OpenAPI document only (the routes parse
with ``availability.push_policy``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from services.http.schemas import AuditActor


class PushPolicyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy_id: str | None = Field(None, description="optional; must equal the path's policy_id")
    sku: str | None = Field(None, description="null: any SKU")
    location_id: str | None = Field(None, description="null: any location")
    low_stock: int | None = Field(
        None, ge=0, description="at or below this (ours or the shop's), every change at once"
    )
    min_delta: int | None = Field(
        None, ge=0, description="above low_stock: pushed at once after moving this many units"
    )
    # Bounds in the descriptions: schemathesis 4 trips over CPython 3.11's ast.parse
    # (SystemError) when it derives negative cases for bounded numbers.
    min_delta_pct: float | None = Field(
        None, description="0-100: ... and this percent of the last pushed figure"
    )
    max_staleness_s: float | None = Field(
        None, description="0-3600 s: any difference is pushed within this (null: 300 s)"
    )


class PushPolicy(BaseModel):
    policy_id: str
    sku: str | None
    location_id: str | None
    low_stock: int | None
    min_delta: int | None
    min_delta_pct: float | None
    max_staleness_s: float | None


class PushPolicyList(BaseModel):
    policies: list[PushPolicy] = Field(description="sorted by policy_id")


class PushPolicyChange(BaseModel):
    audit_id: str = Field(examples=["push_policies@7"])
    at: str = Field(description="RFC 3339, UTC")
    actor: AuditActor
    action: str = Field(description="push_policy.put or push_policy.delete")
    before: PushPolicy | None
    after: PushPolicy | None


class PushPolicyHistory(BaseModel):
    policy_id: str
    history: list[PushPolicyChange] = Field(description="oldest first")
