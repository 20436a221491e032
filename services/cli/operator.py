"""Who runs an operator command that writes: ``AVAILABILITY_TOKEN``, verified against
the same credentials the APIs accept, must hold the ``ops`` scope. Its subject is
what the audit trail records.

The CLI talks to Kafka and Redis directly, so this check identifies and authorises
operators within the service's rules; the hard boundary is who can reach the broker
and Redis at all (network policy, Kafka ACLs, the Redis password: README Security).
"""

from __future__ import annotations

import uuid

from infra.audit import Actor
from infra.config import Settings
from services.auth.authenticator import Authenticator
from services.auth.identity import Identity, Unauthenticated, missing_scope_message
from services.auth.scopes import OPS


class NotAuthorised(Exception):
    """The operator's credential is missing, not accepted, or lacks ``ops``."""


def operator_identity(settings: Settings) -> Identity:
    token = settings.token.get_secret_value()
    authenticator = Authenticator.from_settings(settings)
    try:
        identity = (
            authenticator.authenticate_token(token)
            if token
            else authenticator.authenticate(None)  # anonymous where auth is not required
        )
    except Unauthenticated as exc:
        hint = "" if token else " (set AVAILABILITY_TOKEN to an ops credential)"
        raise NotAuthorised(f"{exc.reason}{hint}") from None
    if not identity.allows({OPS}):
        raise NotAuthorised(missing_scope_message(identity, {OPS}))
    return identity


def operator_actor(settings: Settings) -> Actor:
    """The verified operator as the audit trail records them; one id per command run."""
    identity = operator_identity(settings)
    return Actor(identity.subject, identity.kind, f"cli-{uuid.uuid4().hex}")
