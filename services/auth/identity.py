"""An authenticated caller, and the refusals of authentication and authorisation."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

CredentialKind = Literal["api_key", "jwt", "client_certificate", "anonymous"]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who called: ``subject`` is what the audit trail records (an API key's id, a
    token's ``sub``, a client certificate's subject)."""

    subject: str
    scopes: frozenset[str]
    kind: CredentialKind

    def allows(self, any_of: Collection[str]) -> bool:
        """True when the identity holds one of ``any_of`` (an empty set: no scope needed)."""
        return not any_of or not self.scopes.isdisjoint(any_of)


class Unauthenticated(Exception):
    """No usable credential. ``reason`` is safe to send back: it never quotes the token."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def missing_scope_message(identity: Identity, any_of: Collection[str]) -> str:
    needed = " or ".join(sorted(any_of))
    return f"the credential of {identity.subject!r} lacks the scope this needs: {needed}"
