"""The audit relay: copies every change of the rules log into the audit trail.

A rule's record carries who wrote it in its headers, so the change and its author
are one write. The relay turns each change the rules log's fold made
(``RulesLog.changes``: the rule before and after) into an audit record
``rules@<offset>`` and commits how far it got.

Exactly one relay works at a time, whichever API replica holds the rules topic's
only partition in the consumer group ``<app_id>-audit-relay`` (Kafka's group
protocol elects it; the group's committed offset is the relay's progress). The
group consumer fetches nothing itself: the partition is paused and the changes come
from the process's own rules log, which has folded the topic from its start and
so knows every rule's value before each change. A relay that dies between writing
and committing writes the same ``audit_id``s again on its successor: readers count
each once.

The rules topic keeps a record at least ``RULES_COMPACTION_LAG_MS`` before
compaction may drop it (``infra.topics``): a relay that stays down longer could miss
a change that a later one superseded (the later one is still recorded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from infra.audit import actor_from_headers, audit_record
from infra.config import Settings
from infra.rules_log import Change, RulesLog

log = logging.getLogger(__name__)

#: Seconds between looks at the rules log when nothing wakes the relay earlier.
RELAY_INTERVAL = 0.5


def rule_audit_id(offset: int) -> str:
    return f"rules@{offset}"


def rule_audit_record(settings: Settings, change: Change) -> bytes:
    actor, at = actor_from_headers(change.headers)
    return audit_record(
        audit_id=rule_audit_id(change.offset),
        actor=actor,
        action="rule.delete" if change.after is None else "rule.put",
        resource=f"rule:{change.rule_id}",
        before=None if change.before is None else change.before.to_data(),
        after=None if change.after is None else change.after.to_data(),
        at=at,
        source={"topic": settings.rules_topic, "offset": change.offset},
    )


class AuditRelay:
    def __init__(self, settings: Settings, rules: RulesLog) -> None:
        self.settings = settings
        self.rules = rules
        self.group = f"{settings.faust_app_id}-audit-relay"
        self._tp = TopicPartition(settings.rules_topic, 0)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self.relayed = 0  # audit records written by this process
        self.last_error: str | None = None

    @property
    def active(self) -> bool:
        """True while this process is the elected relay."""
        return self._consumer is not None and self._tp in self._consumer.assignment()

    async def start(self) -> None:
        servers = self.settings.bootstrap_servers
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=servers,
            group_id=self.group,
            enable_auto_commit=False,
            session_timeout_ms=int(self.settings.broker_session_timeout * 1000),
            heartbeat_interval_ms=int(self.settings.broker_heartbeat_interval * 1000),
            client_id=f"{self.settings.faust_app_id}-audit-relay",
        )
        await self._consumer.start()
        self._consumer.subscribe([self.settings.rules_topic])
        self._producer = AIOKafkaProducer(
            bootstrap_servers=servers,
            acks="all",
            client_id=f"{self.settings.faust_app_id}-audit-relay",
        )
        await self._producer.start()
        self._task = asyncio.create_task(self._run(), name="audit-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                # Keeps the group membership alive (and handles rebalances); the
                # partition is paused, so nothing is fetched.
                await self._consumer.getmany(timeout_ms=100)
                if self.active:
                    self._consumer.pause(self._tp)
                    await self.relay()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker went away: try again
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("audit relay: %s", self.last_error)
                await asyncio.sleep(1.0)
                continue
            with contextlib.suppress(TimeoutError):
                await self.rules.wait_advanced(RELAY_INTERVAL)

    async def relay(self) -> int:
        """Write the audit records of the changes since the committed offset."""
        assert self._consumer is not None and self._producer is not None
        committed = await self._consumer.committed(self._tp) or 0
        folded_to = self.rules.position
        if folded_to <= committed:
            return 0
        changes = [c for c in self.rules.changes_from(committed) if c.offset < folded_to]
        if self.rules.changes and self.rules.changes[0].offset > committed and committed > 0:
            # Should not happen: the rules log keeps far more than a relay trails by.
            log.error(
                "audit relay: changes before offset %d are no longer held; relaying from there",
                self.rules.changes[0].offset,
            )
        sent: list[Any] = []
        for change in changes:
            value = rule_audit_record(self.settings, change)
            sent.append(
                await self._producer.send(
                    self.settings.audit_topic,
                    value,
                    key=f"rule:{change.rule_id}".encode(),
                    partition=0,
                )
            )
        await asyncio.gather(*sent)
        await self._consumer.commit({self._tp: OffsetAndMetadata(folded_to, "")})
        self.relayed += len(changes)
        if changes:
            log.info("audit relay: %d rule change(s) recorded", len(changes))
        return len(changes)
