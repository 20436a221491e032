"""Who makes a request, as the audit trail records it: the credential's identity
(set by ``services.http.access``) and the request's id.

The id is the caller's ``X-Request-Id`` when it is a sensible token (so a client can
find its own change in the history), else a fresh one; it is echoed in the answer.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Final

from fastapi import Depends, Request

from infra.audit import Actor
from services.auth.identity import Identity
from services.http.access import IDENTITY_KEY

REQUEST_ID_HEADER: Final = "X-Request-Id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id(request: Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER)
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


async def get_actor(request: Request) -> Actor:
    identity = getattr(request.state, IDENTITY_KEY, None)
    if not isinstance(identity, Identity):  # the middleware runs before every route
        raise RuntimeError("no identity: the request did not pass the access check")
    return Actor(identity.subject, identity.kind, request_id(request))


ActorDep = Annotated[Actor, Depends(get_actor)]
