"""The audit trail: who changed what, when, and what it was before and after.

Records go to ``availability.audit``: one partition (one order for everyone), not
compacted, kept ``AVAILABILITY_AUDIT_RETENTION_DAYS``. Each is a JSON object::

    {"audit_id": "rules@42", "at": "2026-12-04T10:15:30.123Z",
     "actor": {"subject": "planner-app", "kind": "api_key", "request_id": "9f1c..."},
     "action": "rule.put", "resource": "rule:default",
     "before": {...} | null, "after": {...} | null,
     "source": {"topic": "availability.rules", "offset": 42}}

keyed by ``resource``. ``audit_id`` names what is recorded (a policy change: its
topic and offset; an operator action: a fresh id), so a record written twice (a
relay that restarted before it committed) is one record to every reader.

Policy changes are recorded by the audit relay (``infra.audit_relay``) from the
policy's own log, whose records carry the actor in their headers
(``actor_headers``): the change and who made it are one write, so no crash can
separate them. Operator actions (``services.cli``) are recorded by the command that
performs them, after it did.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from infra.config import Settings
from infra.kafka import kafka_client_options
from infra.partition_fold import PartitionFold

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]

SUBJECT_HEADER = "audit-subject"
KIND_HEADER = "audit-kind"
REQUEST_ID_HEADER = "audit-request-id"
AT_HEADER = "audit-at"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did it: the credential's subject and kind, and the request's id."""

    subject: str
    kind: str
    request_id: str | None = None

    def to_data(self) -> dict[str, Any]:
        return {"subject": self.subject, "kind": self.kind, "request_id": self.request_id}


#: A change found in a policy log without actor headers (written by other means).
UNKNOWN_ACTOR = Actor("unknown", "unknown")


def timestamp(seconds: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if seconds is None else seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def actor_headers(actor: Actor, at: str | None = None) -> Headers:
    headers = [
        (SUBJECT_HEADER, actor.subject.encode()),
        (KIND_HEADER, actor.kind.encode()),
        (AT_HEADER, (at or timestamp()).encode()),
    ]
    if actor.request_id:
        headers.append((REQUEST_ID_HEADER, actor.request_id.encode()))
    return headers


def actor_from_headers(headers: Iterable[tuple[str, bytes]]) -> tuple[Actor, str | None]:
    """The actor and time a policy record's headers name (``UNKNOWN_ACTOR`` if none)."""
    found = {name: value.decode("utf-8", "replace") for name, value in headers}
    if SUBJECT_HEADER not in found:
        return UNKNOWN_ACTOR, None
    actor = Actor(
        found[SUBJECT_HEADER], found.get(KIND_HEADER, "unknown"), found.get(REQUEST_ID_HEADER)
    )
    return actor, found.get(AT_HEADER)


def audit_record(
    *,
    audit_id: str,
    actor: Actor,
    action: str,
    resource: str,
    before: Any = None,
    after: Any = None,
    at: str | None = None,
    source: Mapping[str, Any] | None = None,
) -> bytes:
    return orjson.dumps(
        {
            "audit_id": audit_id,
            "at": at or timestamp(),
            "actor": actor.to_data(),
            "action": action,
            "resource": resource,
            "before": before,
            "after": after,
            "source": None if source is None else dict(source),
        }
    )


def new_audit_id(kind: str) -> str:
    return f"{kind}@{uuid.uuid4().hex}"


async def record_actions(settings: Settings, records: Sequence[tuple[str, bytes]]) -> None:
    """Append ``(resource, record)`` pairs to the audit topic (an operator's actions)."""
    if not records:
        return
    producer = AIOKafkaProducer(
        **kafka_client_options(settings),
        acks="all",
        client_id=f"{settings.faust_app_id}-audit",
    )
    await producer.start()
    try:
        sent = [
            await producer.send(settings.audit_topic, value, key=resource.encode(), partition=0)
            for resource, value in records
        ]
        await producer.flush()
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


class AuditLog(PartitionFold):
    """The audit topic folded into an index by resource, for ``history`` queries.

    Only the resources whose kind is in ``kinds`` are kept (the API asks about
    policies; operators' actions are many and read with any Kafka client). Records
    are deduplicated by ``audit_id``.
    """

    def __init__(self, settings: Settings, kinds: frozenset[str] = frozenset({"rule"})) -> None:
        super().__init__(settings, settings.audit_topic, "audit-log")
        self.kinds = kinds
        self._by_resource: dict[str, list[dict[str, Any]]] = {}
        self._seen: set[str] = set()

    async def fold(self, record: Any) -> None:
        try:
            data = orjson.loads(record.value or b"")
            resource = data["resource"]
            audit_id = data["audit_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.error("audit log: unreadable record at offset %d skipped", record.offset)
            return
        if not isinstance(resource, str) or resource.split(":", 1)[0] not in self.kinds:
            return
        if audit_id in self._seen:
            return
        self._seen.add(audit_id)
        self._by_resource.setdefault(resource, []).append(data)

    def has(self, audit_id: str) -> bool:
        return audit_id in self._seen

    def history(self, resource: str) -> list[dict[str, Any]]:
        return list(self._by_resource.get(resource, ()))
