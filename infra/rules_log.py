"""The rules log: a one-partition, compacted topic keyed by ``rule_id``.

It is the source of truth for rules and survives a restart of every process.
Every API replica and every worker folds the whole log into a ``RuleBook``; as
they fold the same records in the same order they agree on every decision,
including which of two racing PUTs for one scope wins (the first in the log).

A record written through the API carries who made it in its headers
(``infra.audit.actor_headers``); ``changes`` keeps, for the audit relay
(``infra.audit_relay``), every change the fold made: its offset, the rule before and
after, and those headers.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from availability.rules import InvalidRule, Rule, RuleBook, parse_rule
from infra.audit import Actor, Headers, actor_headers
from infra.config import Settings
from infra.partition_fold import PartitionFold

log = logging.getLogger(__name__)

RuleChange = Callable[[Rule | None, Rule | None], Awaitable[None] | None]
#: Changes kept for the audit relay; it needs those since its last commit, which
#: trails the log by a second or so (a log this process folded from the start).
MAX_CHANGES_KEPT = 100_000


@dataclass(frozen=True, slots=True)
class Change:
    """A record of the log that changed a rule (a race lost or a repeat changes none)."""

    offset: int
    rule_id: str
    before: Rule | None
    after: Rule | None
    headers: Headers


class RuleConflict(Exception):
    def __init__(self, holder: Rule) -> None:
        super().__init__(f"rule {holder.rule_id!r} already holds this scope")
        self.holder = holder


class TooManyRules(Exception):
    """A new rule beyond ``AVAILABILITY_MAX_RULES``: every worker and API replica folds
    every rule into memory and consults them for every SKU-location it computes."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} rules exist, the most this deployment allows")
        self.limit = limit


def encode_rule(rule: Rule) -> bytes:
    return orjson.dumps(rule.to_data())


class RulesLog(PartitionFold):
    def __init__(self, settings: Settings, on_change: RuleChange | None = None) -> None:
        super().__init__(settings, settings.rules_topic, "rules-log")
        self.book = RuleBook()
        self._on_change = on_change
        self._producer: AIOKafkaProducer | None = None
        self.changes: deque[Change] = deque(maxlen=MAX_CHANGES_KEPT)

    async def start(self) -> None:
        await super().start()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap_servers,
            acks="all",
            linger_ms=0,
            # Exact end offsets (read-your-writes in sync()) on brokers that need it.
            max_batch_size=self.settings.producer_max_batch_size,
            client_id=f"{self.settings.faust_app_id}-rules",
        )
        await self._producer.start()

    async def stop(self) -> None:
        await super().stop()
        if self._producer is not None:
            await self._producer.stop()

    async def fold(self, record: Any) -> None:
        await self._fold(record.key, record.value, record.offset, record.headers)

    async def _fold(
        self, key: bytes | None, value: bytes | None, offset: int = -1, headers: Headers = ()
    ) -> None:
        if key is None:
            log.warning("rules log: record without key ignored")
            return
        rule_id = key.decode("utf-8", "replace")
        before = self.book.get(rule_id)
        if value is None:
            after = None
            self.book.delete(rule_id)
        else:
            try:
                after = parse_rule(rule_id, orjson.loads(value))
            except (orjson.JSONDecodeError, InvalidRule) as exc:
                log.error("rules log: invalid record for %r ignored: %s", rule_id, exc)
                return
            if not self.book.put(after):
                log.warning("rules log: %r lost a race for its scope; ignored", rule_id)
                return
        if before == after:
            return
        self.changes.append(Change(offset, rule_id, before, after, tuple(headers)))
        if self._on_change is not None:
            try:
                outcome = self._on_change(before, after)
                if outcome is not None:
                    await outcome
            except Exception:  # a listener's bug must not stop the fold
                log.exception("rules log: change listener failed for %r", rule_id)

    async def put(self, rule: Rule, actor: Actor | None = None) -> Rule:
        await self.sync()
        holder = self.book.conflict(rule)
        if holder is not None:
            raise RuleConflict(holder)
        if self.book.get(rule.rule_id) is None and len(self.book) >= self.settings.max_rules:
            raise TooManyRules(self.settings.max_rules)
        offset = await self._send(rule.rule_id, encode_rule(rule), actor)
        await self.wait_for(offset + 1)
        stored = self.book.get(rule.rule_id)
        if stored != rule:
            # Another replica's PUT for the same scope got into the log first. Our
            # record was ignored by every reader; re-assert the current value so
            # that compaction cannot later resurrect the ignored one.
            current = self.book.get(rule.rule_id)
            await self._send(rule.rule_id, None if current is None else encode_rule(current))
            holder = self.book.conflict(rule)
            raise RuleConflict(holder if holder is not None else rule)
        return rule

    async def delete(self, rule_id: str, actor: Actor | None = None) -> bool:
        await self.sync()
        if self.book.get(rule_id) is None:
            return False
        offset = await self._send(rule_id, None, actor)
        await self.wait_for(offset + 1)
        return True

    async def _send(self, rule_id: str, value: bytes | None, actor: Actor | None = None) -> int:
        assert self._producer is not None
        metadata = await self._producer.send_and_wait(
            self._tp.topic,
            value=value,
            key=rule_id.encode(),
            partition=0,
            headers=None if actor is None else list(actor_headers(actor)),
        )
        return int(metadata.offset)

    def changes_from(self, offset: int) -> Sequence[Change]:
        """The kept changes at ``offset`` or later, oldest first."""
        return [change for change in self.changes if change.offset >= offset]
