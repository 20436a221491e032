"""The scopes a credential may hold, and what each lets it do (README "Security")."""

from __future__ import annotations

#: Read availability: the HTTP reads and gRPC Get/BatchGet.
AVAILABILITY_READ = "availability:read"
#: Open gRPC WatchAvailability streams (each held open costs the server a slot).
AVAILABILITY_WATCH = "availability:watch"
#: Read the rules and their history.
RULES_READ = "rules:read"
#: Create, replace and delete rules (and the other policies the API manages).
RULES_WRITE = "rules:write"
#: Hold, release and extend reservations through the reservation API.
RESERVATIONS_WRITE = "reservations:write"
#: Read reservations made through the API (reservations:write may read them too).
RESERVATIONS_READ = "reservations:read"
#: Operator actions that write: dead-letter replays, baseline resets, rebuilds.
OPS = "ops"
#: Scrape /metrics where it is not left open (AVAILABILITY_HTTP_METRICS_OPEN=false).
METRICS_READ = "metrics:read"

ALL_SCOPES: tuple[str, ...] = (
    AVAILABILITY_READ,
    AVAILABILITY_WATCH,
    RULES_READ,
    RULES_WRITE,
    RESERVATIONS_WRITE,
    RESERVATIONS_READ,
    OPS,
    METRICS_READ,
)
KNOWN_SCOPES = frozenset(ALL_SCOPES)
