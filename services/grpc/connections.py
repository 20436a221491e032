"""What the gRPC server allows a connection and a call (README "gRPC API").

- **Keepalive**: the server pings a connection that has been silent for
  ``AVAILABILITY_GRPC_KEEPALIVE_TIME`` seconds (with or without calls) and closes it
  when a ping is not answered within ``AVAILABILITY_GRPC_KEEPALIVE_TIMEOUT``: the calls
  on it are cancelled, so a terminal that vanished without closing its connection
  (power cut, network gone: no FIN, no RST) gives its watches back within the sum of
  the two (40 s by default), not when TCP gives up (about 15 minutes while the server
  sends on it, never while the watch is quiet).
- **Clients' pings**: a client may keep its connection alive with pings of its own
  every ``CLIENT_PING_MIN_INTERVAL`` seconds at the most; one that pings more often
  is sent GOAWAY ``too_many_pings`` after two such pings (gRPC's enforcement).
- **Sizes**: a request larger than ``AVAILABILITY_GRPC_MAX_RECEIVE_MESSAGE_BYTES`` is
  refused RESOURCE_EXHAUSTED by gRPC before it is parsed.
- **Calls at once**: ``AVAILABILITY_GRPC_MAX_CONCURRENT_RPCS``, watches included
  (a watch is a call for as long as it is open); more get RESOURCE_EXHAUSTED
  ("Concurrent RPC limit exceeded!"). It must exceed ``AVAILABILITY_GRPC_MAX_WATCHES``,
  so that a full watch cap leaves room for reads and health checks.
"""

from __future__ import annotations

from infra.config import Settings

CLIENT_PING_MIN_INTERVAL = 10.0


class ServerLimitsError(ValueError):
    """The limits cannot be used together; the message says why."""


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """The ``grpc.aio.server`` channel arguments for ``settings``."""
    timeout_ms = _ms(settings.grpc_keepalive_timeout)
    return [
        ("grpc.max_receive_message_length", settings.grpc_max_receive_message_bytes),
        ("grpc.keepalive_time_ms", _ms(settings.grpc_keepalive_time)),
        ("grpc.keepalive_timeout_ms", timeout_ms),
        # grpcio 1.85 times the keepalive ping out with this one: keepalive_timeout_ms
        # alone left a silent connection open for the default minute. Both are set.
        ("grpc.http2.ping_timeout_ms", timeout_ms),
        # Ping idle connections too: a dead one is closed even when it holds no call.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(CLIENT_PING_MIN_INTERVAL)),
    ]


def maximum_concurrent_rpcs(settings: Settings) -> int:
    if settings.grpc_max_concurrent_rpcs <= settings.grpc_max_watches:
        raise ServerLimitsError(
            f"AVAILABILITY_GRPC_MAX_CONCURRENT_RPCS ({settings.grpc_max_concurrent_rpcs}) must"
            f" exceed AVAILABILITY_GRPC_MAX_WATCHES ({settings.grpc_max_watches}): every open"
            " watch is a call in progress, and reads need room beside them"
        )
    return settings.grpc_max_concurrent_rpcs


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
