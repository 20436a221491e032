"""Shapes of the request and response bodies, for the OpenAPI document only.

The hot routes send bytes stored ready to send and parse request bodies with the
domain validators, so these models are never used to validate or serialise; they
describe what the routes do (``tests/unit/test_http_pieces.py`` keeps them in step).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from availability.identifiers import DEFAULT_CHANNEL


class ErrorDetail(BaseModel):
    code: str = Field(examples=["invalid_argument"])
    message: str = Field(examples=["channel must be 1-32 characters of [a-z0-9_-], got 'Web'"])


class ErrorBody(BaseModel):
    error: ErrorDetail


class LocationAvailability(BaseModel):
    location_id: str
    on_hand: int
    reserved: int
    in_transit: int
    damaged: int
    safety_stock: int
    buffer: int = Field(description="the channel's buffer at this location")
    ats: int = Field(description="available to sell here on the channel, never negative")


class Availability(BaseModel):
    sku: str
    channel: str
    ats: int = Field(description="sum of the listed locations' ats")
    locations: list[LocationAvailability] = Field(description="sorted by location_id")


class UnknownSku(BaseModel):
    sku: str
    ats: int = Field(0, description="always 0")
    locations: list[LocationAvailability] = Field(description="always empty")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    skus: list[str] = Field(max_length=500, description="at most 500; duplicates allowed")
    channel: str = Field(DEFAULT_CHANNEL, description="sales channel, [a-z0-9_-]{1,32}")


class BatchAnswer(BaseModel):
    channel: str
    items: list[Availability | UnknownSku] = Field(description="in request order")


class RuleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule_id: str | None = Field(None, description="optional; must equal the path's rule_id")
    sku: str | None = Field(None, description="null: any SKU")
    location_id: str | None = Field(None, description="null: any location")
    safety_stock: int | None = Field(None, ge=0, description="null: not set by this rule")
    channel_buffers: dict[str, int] | None = Field(
        None, description="channel -> units held back (>= 0); null: none"
    )


class Rule(BaseModel):
    rule_id: str
    sku: str | None
    location_id: str | None
    safety_stock: int | None
    channel_buffers: dict[str, int] | None


class RuleList(BaseModel):
    rules: list[Rule] = Field(description="sorted by rule_id")


class AuditActor(BaseModel):
    subject: str = Field(description="the credential's subject (an API key's id, a token's sub)")
    kind: str = Field(examples=["api_key"], description="api_key, jwt, client_certificate, ...")
    request_id: str | None


class RuleChange(BaseModel):
    audit_id: str = Field(examples=["rules@42"])
    at: str = Field(description="RFC 3339, UTC")
    actor: AuditActor
    action: str = Field(examples=["rule.put"], description="rule.put or rule.delete")
    before: Rule | None
    after: Rule | None


class RuleHistory(BaseModel):
    rule_id: str
    history: list[RuleChange] = Field(description="oldest first")


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    status: str = Field(examples=["ready"], description="ready or not_ready")
    checks: dict[str, str] = Field(
        description="redis, broker, processor, serving (/readyz/local: redis, serving):"
        ' "ok" or why not',
        examples=[{"redis": "ok", "broker": "ok", "processor": "ok", "serving": "ok"}],
    )


class NotReady(Readiness):
    error: ErrorDetail
