"""Access control of the gRPC API: one server interceptor checks every call's
credential and scope before any handler runs, with the HTTP API's rules and messages
(README "Security").

What each method needs is a table (``MethodAccess``): every ``AvailabilityService``
method names its scope in ``SERVICE_SCOPES`` (the server refuses to start when one
does not); the health service stays open for Kubernetes' probes, and so does
reflection while it is enabled. A method the table does not name needs a valid
credential and is then answered UNIMPLEMENTED, whether the server has it or not.

Credentials: ``authorization: Bearer <token>`` metadata, verified by the shared
``Authenticator``. On a mutual-TLS server a call without a token is its client
certificate's (``services.grpc.tls``); a token, when sent, takes precedence. Refusals
are UNAUTHENTICATED and PERMISSION_DENIED with the HTTP API's messages, counted in
``availability_grpc_auth_refusals_total{code}``.

Cost: an accepted call gets the continuation's handler unchanged, not a wrapper (a
wrapping interceptor cost 14% of GetAvailability's throughput). A refusal is a handler
of its own, declared client-streaming so that grpc.aio does not read the request
first: it answers before any byte of the request is parsed, whatever the method's
shape, and a refused stream ends before its first message.

The caller reaches the handlers through a context variable (``caller``): grpc.aio runs
the interceptor and then the handler in one task per call, so the value set here is
that call's handler's and no other call's (``tests/unit/test_grpc_access.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import Any, Final, TypeAlias

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from prometheus_client import Counter

from services.auth.authenticator import Authenticator
from services.auth.identity import Identity, Unauthenticated, missing_scope_message
from services.auth.scopes import (
    AVAILABILITY_READ,
    AVAILABILITY_WATCH,
    RESERVATIONS_READ,
    RESERVATIONS_WRITE,
)
from services.grpc.gen.availability.v1 import availability_pb2 as pb
from services.grpc.tls import certificate_subject

log = logging.getLogger(__name__)

AVAILABILITY_SERVICE: Final = pb.DESCRIPTOR.services_by_name["AvailabilityService"]
HEALTH_SERVICE: Final = health_pb2.DESCRIPTOR.services_by_name["Health"]
REFLECTION_SERVICE: Final = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]

#: What each AvailabilityService method needs: a credential holding one of these. The
#: reservation RPCs need what the HTTP API's /v1/reservations routes need.
SERVICE_SCOPES: Final[Mapping[str, frozenset[str]]] = {
    "GetAvailability": frozenset({AVAILABILITY_READ}),
    "BatchGetAvailability": frozenset({AVAILABILITY_READ}),
    "WatchAvailability": frozenset({AVAILABILITY_WATCH}),
    "Reserve": frozenset({RESERVATIONS_WRITE}),
    "Release": frozenset({RESERVATIONS_WRITE}),
    "GetReservation": frozenset({RESERVATIONS_READ, RESERVATIONS_WRITE}),
    "ExtendReservation": frozenset({RESERVATIONS_WRITE}),
}
#: The identity's subject until a handler asks for the certificate's (``caller``).
CERTIFICATE_HOLDER: Final = "client certificate"

_caller: ContextVar[Identity | None] = ContextVar("grpc_caller", default=None)

# A string: grpc's classes are not subscriptable at run time.
Continuation: TypeAlias = (
    "Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]]"
)


class UndeclaredAccess(RuntimeError):
    """An AvailabilityService method that ``SERVICE_SCOPES`` does not name."""


def method_paths(service: Any) -> list[str]:
    """``/package.Service/Method`` of every method of a service descriptor."""
    return [f"/{service.full_name}/{method.name}" for method in service.methods]


class MethodAccess:
    """Method path -> the scopes any of which it needs, and the open method paths."""

    def __init__(self, scopes: Mapping[str, frozenset[str]], open_methods: Iterable[str]) -> None:
        empty = sorted(path for path, any_of in scopes.items() if not any_of)
        if empty:
            raise ValueError(f"methods need at least one scope: {', '.join(empty)}")
        self.scopes = dict(scopes)
        self.open = frozenset(open_methods)

    @classmethod
    def for_server(cls, *, reflection: bool) -> MethodAccess:
        undeclared = sorted({m.name for m in AVAILABILITY_SERVICE.methods} - set(SERVICE_SCOPES))
        if undeclared:
            raise UndeclaredAccess(
                f"{AVAILABILITY_SERVICE.full_name} method(s) {', '.join(undeclared)} declare no"
                " scope: add them to services.grpc.access.SERVICE_SCOPES"
            )
        service = AVAILABILITY_SERVICE.full_name
        scopes = {f"/{service}/{name}": any_of for name, any_of in SERVICE_SCOPES.items()}
        open_methods = method_paths(HEALTH_SERVICE)
        if reflection:
            open_methods += method_paths(REFLECTION_SERVICE)
        return cls(scopes, open_methods)


class AccessControl(grpc.aio.ServerInterceptor):
    """The credential and scope of every call, or UNAUTHENTICATED / PERMISSION_DENIED."""

    def __init__(
        self,
        authenticator: Authenticator,
        access: MethodAccess,
        refusals: Counter,
        certificate_scopes: frozenset[str] | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.access = access
        self._unauthenticated = refusals.labels(grpc.StatusCode.UNAUTHENTICATED.name)
        self._denied = refusals.labels(grpc.StatusCode.PERMISSION_DENIED.name)
        # Mutual TLS: every connection has a verified certificate (the handshake
        # fails without one), so a call without a token needs no further check here.
        self._certificate = (
            None
            if certificate_scopes is None
            else Identity(CERTIFICATE_HOLDER, certificate_scopes, "client_certificate")
        )

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        if method in self.access.open:
            return await continuation(handler_call_details)
        authorization = _authorization(handler_call_details.invocation_metadata)
        if authorization is None and self._certificate is not None:
            identity = self._certificate
        else:
            try:
                identity = self.authenticator.authenticate(authorization)
            except Unauthenticated as exc:
                self._unauthenticated.inc()
                log.debug("UNAUTHENTICATED %s: %s", method, exc.reason)
                return refusal(grpc.StatusCode.UNAUTHENTICATED, exc.reason)
        any_of = self.access.scopes.get(method)
        if any_of is None:
            return refusal(grpc.StatusCode.UNIMPLEMENTED, f"unknown method {method[:200]}")
        if not identity.allows(any_of):
            self._denied.inc()
            return refusal(
                grpc.StatusCode.PERMISSION_DENIED, missing_scope_message(identity, any_of)
            )
        # The call's own task: the value lives and dies with it (no reset needed).
        _caller.set(identity)
        return await continuation(handler_call_details)


def caller(context: grpc.aio.ServicerContext[Any, Any]) -> Identity:
    """The identity of the call being handled (set by ``AccessControl``)."""
    identity = _caller.get()
    if identity is None:
        raise RuntimeError("no caller identity: the access interceptor did not run")
    if identity.kind == "client_certificate" and identity.subject == CERTIFICATE_HOLDER:
        subject = certificate_subject(context.auth_context())
        return Identity(subject, identity.scopes, identity.kind)
    return identity


def refusal(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler that ends the call with ``code`` before reading its request."""

    async def refuse(requests: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, message)

    return grpc.stream_stream_rpc_method_handler(refuse)


def _authorization(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return None
