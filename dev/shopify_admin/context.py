"""What a GraphQL call runs with: the shop, the caller's token, the schema's access
requirements, and what an injected fault asks the mutation to do."""

from __future__ import annotations

from dataclasses import dataclass

from dev.shopify_admin.model import Ids, Shop, Token
from dev.shopify_admin.schema import AdminSchema


@dataclass
class CallContext:
    shop: Shop
    token: Token
    admin: AdminSchema
    ids: Ids
    request_id: str
    #: seconds a mutation holds its idempotency key before working (a slow answer)
    hold: float = 0.0
    #: fail inside Shopify after taking the idempotency key (INTERNAL_SERVER_ERROR)
    fail_inside: bool = False


class InternalFailure(Exception):
    """An injected failure inside the mutation: answered as INTERNAL_SERVER_ERROR."""
