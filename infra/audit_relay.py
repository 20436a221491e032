"""The audit relay: copies every change of the policy logs (the rules, the push
policies: ``infra.policy_log``) into the audit trail.

A policy's record carries who wrote it in its headers, so the change and its author
are one write. The relay turns each change a policy log's fold made
(``PolicyLog.changes``: the policy before and after) into an audit record
``<audit_prefix>@<offset>`` (``rules@42``, ``push_policies@7``) and commits how far it
got, per log.

Exactly one relay works on a log at a time, whichever API replica holds the log's
only partition in the consumer group ``<app_id>-audit-relay`` (Kafka's group
protocol elects it; the group's committed offset is the relay's progress). The
group consumer fetches nothing itself: the partitions are paused and the changes
come from the process's own policy logs, which have folded their topics from the
start and so know every policy's value before each change. A relay that dies
between writing and committing writes the same ``audit_id``s again on its
successor: readers count each once.

A policy topic keeps a record at least ``RULES_COMPACTION_LAG_MS`` before
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

from infra.config import Settings
from infra.kafka import kafka_client_options
from infra.policy_log import PolicyLog
from infra.rules_log import RulesLog

log = logging.getLogger(__name__)

#: Seconds between looks at the rules log when nothing wakes the relay earlier.
RELAY_INTERVAL = 0.5


def rule_audit_id(offset: int) -> str:
    return f"{RulesLog.audit_prefix}@{offset}"


class AuditRelay:
    def __init__(self, settings: Settings, *logs: PolicyLog[Any]) -> None:
        self.settings = settings
        self.logs = {TopicPartition(log.topic, 0): log for log in logs}
        self.group = f"{settings.faust_app_id}-audit-relay"
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self.relayed = 0  # audit records written by this process
        self.last_error: str | None = None

    @property
    def rules(self) -> PolicyLog[Any]:
        return next(iter(self.logs.values()))

    @property
    def active(self) -> bool:
        """True while this process is the elected relay of at least one log."""
        return self._consumer is not None and bool(set(self.logs) & self._consumer.assignment())

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            **kafka_client_options(self.settings),
            group_id=self.group,
            enable_auto_commit=False,
            session_timeout_ms=int(self.settings.broker_session_timeout * 1000),
            heartbeat_interval_ms=int(self.settings.broker_heartbeat_interval * 1000),
            client_id=f"{self.settings.faust_app_id}-audit-relay",
        )
        await self._consumer.start()
        self._consumer.subscribe([tp.topic for tp in self.logs])
        self._producer = AIOKafkaProducer(
            **kafka_client_options(self.settings),
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
                # partitions are paused, so nothing is fetched.
                await self._consumer.getmany(timeout_ms=100)
                for tp in self._consumer.assignment() & set(self.logs):
                    self._consumer.pause(tp)
                    await self.relay(tp)
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker went away: try again
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("audit relay: %s", self.last_error)
                await asyncio.sleep(1.0)
                continue
            waits = [
                asyncio.ensure_future(p.wait_advanced(RELAY_INTERVAL)) for p in self.logs.values()
            ]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def relay(self, tp: TopicPartition | None = None) -> int:
        """Write the audit records of one log's changes since its committed offset."""
        assert self._consumer is not None and self._producer is not None
        tp = tp or next(iter(self.logs))
        policies = self.logs[tp]
        committed = await self._consumer.committed(tp) or 0
        folded_to = policies.position
        if folded_to <= committed:
            return 0
        changes = [c for c in policies.changes_from(committed) if c.offset < folded_to]
        if policies.changes and policies.changes[0].offset > committed and committed > 0:
            # Should not happen: a policy log keeps far more than a relay trails by.
            log.error(
                "audit relay: %s changes before offset %d are no longer held; relaying from there",
                policies.kind,
                policies.changes[0].offset,
            )
        sent: list[Any] = []
        for change in changes:
            sent.append(
                await self._producer.send(
                    self.settings.audit_topic,
                    policies.audit_record(change),
                    key=policies.resource(change.policy_id).encode(),
                    partition=0,
                )
            )
        await asyncio.gather(*sent)
        await self._consumer.commit({tp: OffsetAndMetadata(folded_to, "")})
        self.relayed += len(changes)
        if changes:
            log.info("audit relay: %d %s change(s) recorded", len(changes), policies.kind)
        return len(changes)
