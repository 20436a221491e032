"""A policy log: a one-partition, compacted topic keyed by the policy's id, folded
from its start by every process that needs the policies (``PartitionFold``).

The rules (``infra.rules_log``) and the push policies (``infra.push_policy_log``)
are both one: the source of truth, surviving a restart of every process. As every
reader folds the same records in the same order they agree on every decision,
including which of two racing PUTs for one scope wins (the first in the log).

A record written through the API carries who made it in its headers
(``infra.audit.actor_headers``); ``changes`` keeps, for the audit relay
(``infra.audit_relay``), every change the fold made: its offset, the policy before
and after, and those headers. A subclass says how its policies are parsed, named
and recorded (``kind``, ``audit_prefix``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import orjson
from aiokafka import AIOKafkaProducer

from infra.audit import Actor, Headers, actor_from_headers, actor_headers, audit_record
from infra.config import Settings
from infra.kafka import kafka_client_options
from infra.partition_fold import PartitionFold

log = logging.getLogger(__name__)

#: Changes kept for the audit relay; it needs those since its last commit, which
#: trails the log by a second or so (a log this process folded from the start).
MAX_CHANGES_KEPT = 100_000

P = TypeVar("P")
PolicyChange = Callable[[Any, Any], Awaitable[None] | None]


class Book(Protocol[P]):
    """Policies by id and by scope (``RuleBook``, ``PushPolicyBook``)."""

    def __len__(self) -> int: ...

    def get(self, policy_id: str, /) -> P | None: ...

    def put(self, policy: P, /) -> bool: ...

    def delete(self, policy_id: str, /) -> P | None: ...

    def conflict(self, policy: P, /) -> P | None: ...

    def all(self) -> list[P]: ...


@dataclass(frozen=True, slots=True)
class Change:
    """A record of the log that changed a policy (a race lost or a repeat changes none)."""

    offset: int
    policy_id: str
    before: Any
    after: Any
    headers: Headers

    @property
    def rule_id(self) -> str:  # the rules log's name for it
        return self.policy_id


class ScopeConflict(Exception):
    def __init__(self, holder: Any) -> None:
        super().__init__("another policy already holds this scope")
        self.holder = holder


class TooManyPolicies(Exception):
    """A new policy beyond the deployment's limit: every reader holds them all."""

    def __init__(self, limit: int, what: str = "policies") -> None:
        super().__init__(f"{limit} {what} exist, the most this deployment allows")
        self.limit = limit


class PolicyLog(PartitionFold, Generic[P]):
    #: The audit trail's resource kind (``rule`` -> ``rule:<id>``, action ``rule.put``).
    kind: ClassVar[str] = "policy"
    #: ``audit_id`` of the change at offset n: ``<audit_prefix>@n``.
    audit_prefix: ClassVar[str] = "policies"

    def __init__(
        self,
        settings: Settings,
        topic: str,
        name: str,
        book: Book[P],
        max_count: int,
        on_change: PolicyChange | None = None,
    ) -> None:
        super().__init__(settings, topic, name)
        self.book = book
        self.max_count = max_count
        self._on_change = on_change
        self._producer: AIOKafkaProducer | None = None
        self.changes: deque[Change] = deque(maxlen=MAX_CHANGES_KEPT)

    # ------------------------------------------------------------ what a subclass says

    def parse(self, policy_id: str, data: object) -> P:
        raise NotImplementedError

    def id_of(self, policy: P) -> str:
        raise NotImplementedError

    def to_data(self, policy: P) -> dict[str, Any]:
        raise NotImplementedError

    def conflict_error(self, holder: P) -> Exception:
        return ScopeConflict(holder)

    def limit_error(self) -> Exception:
        return TooManyPolicies(self.max_count)

    # ------------------------------------------------------------ the fold

    @property
    def topic(self) -> str:
        return str(self._tp.topic)

    async def start(self) -> None:
        await super().start()
        self._producer = AIOKafkaProducer(
            **kafka_client_options(self.settings),
            acks="all",
            linger_ms=0,
            # Exact end offsets (read-your-writes in sync()) on brokers that need it.
            max_batch_size=self.settings.producer_max_batch_size,
            client_id=f"{self.settings.faust_app_id}-{self.name}",
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
            log.warning("%s: record without key ignored", self.name)
            return
        policy_id = key.decode("utf-8", "replace")
        before = self.book.get(policy_id)
        if value is None:
            after = None
            self.book.delete(policy_id)
        else:
            try:
                after = self.parse(policy_id, orjson.loads(value))
            except (orjson.JSONDecodeError, ValueError) as exc:
                log.error("%s: invalid record for %r ignored: %s", self.name, policy_id, exc)
                return
            if not self.book.put(after):
                log.warning("%s: %r lost a race for its scope; ignored", self.name, policy_id)
                return
        if before == after:
            return
        self.changes.append(Change(offset, policy_id, before, after, tuple(headers)))
        if self._on_change is not None:
            try:
                outcome = self._on_change(before, after)
                if outcome is not None:
                    await outcome
            except Exception:  # a listener's bug must not stop the fold
                log.exception("%s: change listener failed for %r", self.name, policy_id)

    # ------------------------------------------------------------ writes

    def encode(self, policy: P) -> bytes:
        return orjson.dumps(self.to_data(policy))

    async def put(self, policy: P, actor: Actor | None = None) -> P:
        policy_id = self.id_of(policy)
        await self.sync()
        holder = self.book.conflict(policy)
        if holder is not None:
            raise self.conflict_error(holder)
        if self.book.get(policy_id) is None and len(self.book) >= self.max_count:
            raise self.limit_error()
        offset = await self._send(policy_id, self.encode(policy), actor)
        await self.wait_for(offset + 1)
        if self.book.get(policy_id) != policy:
            # Another replica's PUT for the same scope got into the log first. Our
            # record was ignored by every reader; re-assert the current value so
            # that compaction cannot later resurrect the ignored one.
            current = self.book.get(policy_id)
            await self._send(policy_id, None if current is None else self.encode(current))
            holder = self.book.conflict(policy)
            raise self.conflict_error(holder if holder is not None else policy)
        return policy

    async def delete(self, policy_id: str, actor: Actor | None = None) -> bool:
        await self.sync()
        if self.book.get(policy_id) is None:
            return False
        offset = await self._send(policy_id, None, actor)
        await self.wait_for(offset + 1)
        return True

    async def _send(self, policy_id: str, value: bytes | None, actor: Actor | None = None) -> int:
        assert self._producer is not None
        metadata = await self._producer.send_and_wait(
            self._tp.topic,
            value=value,
            key=policy_id.encode(),
            partition=0,
            headers=None if actor is None else list(actor_headers(actor)),
        )
        return int(metadata.offset)

    # ------------------------------------------------------------ the audit trail

    def changes_from(self, offset: int) -> Sequence[Change]:
        """The kept changes at ``offset`` or later, oldest first."""
        return [change for change in self.changes if change.offset >= offset]

    def audit_id(self, offset: int) -> str:
        return f"{self.audit_prefix}@{offset}"

    def resource(self, policy_id: str) -> str:
        return f"{self.kind}:{policy_id}"

    def latest_change(self, policy_id: str) -> int | None:
        """The offset of the policy's latest change this process folded, if any."""
        return next((c.offset for c in reversed(self.changes) if c.policy_id == policy_id), None)

    def audit_record(self, change: Change) -> bytes:
        actor, at = actor_from_headers(change.headers)
        return audit_record(
            audit_id=self.audit_id(change.offset),
            actor=actor,
            action=f"{self.kind}.delete" if change.after is None else f"{self.kind}.put",
            resource=self.resource(change.policy_id),
            before=None if change.before is None else self.to_data(change.before),
            after=None if change.after is None else self.to_data(change.after),
            at=at,
            source={"topic": self.topic, "offset": change.offset},
        )
