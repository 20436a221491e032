"""All Redis access: the serving records, worker status and shared counters.

Layout (every key carries a hash tag, so a Redis Cluster can spread SKUs):

``{prefix}:sku:{<sku>}``  hash, one per SKU
    ``v``          version: +1 on every change of what the record serves, its figures
                   or the holds counted in them (see ``infra.serving_scripts.WRITE_RECORD``)
    ``h``          the latest deadline of the SKU's holds, while it has any
    ``hl``         the locations of those holds (space-separated)
    ``f``          the latest version the durable change feed has acknowledged
    ``c``          the channels some location has a buffer for (space-separated);
                   present exactly when the record exists
    ``t:*``        the SKU's ATS over its locations for a channel without a buffer
    ``t:<channel>`` the same for a channel in ``c``
    ``a:<loc>``    the location's answer object for a channel without a buffer
    ``b:<channel>:<loc>``  the same for a channel the location has a buffer for
``{prefix}:workers``, ``{prefix}:counters``, ``{prefix}:drift``  worker status, shared
    counters, the last drift check (``infra.operations_state``)
``{prefix}:serving``  hash: how complete the serving records are (``streams.rebuild``)
    ``epoch``      token of the rebuild under way or done since Redis last lost its data
    ``partitions`` how many partitions the SKUs are spread over
    ``p:<n>``      the epoch in which partition n's records were all written
``{prefix}:serving:{m<n>}``  Redis Cluster only: the epoch again, once per master (the
    smallest n whose slot that master owns), so that a master that lost its data (its
    share of the records) voids the epoch like a single Redis losing everything
``{prefix}:changes:{<sku>}``  sharded pub/sub channel: ``<version> <=|+> <locations>`` on
    every change of what the record serves (``=``: the SKU's every location; ``+``: only
    those that changed), `` <held>`` after it while the SKU has live reservation holds
    (units per location, JSON; ``infra.records.decode_change``)
``{prefix}:holds:{<sku>}``  hash: the SKU's reservation holds (``infra.reservation_store``)
``{prefix}:hold-checks:{<partition>}``  sorted set: lines the worker looks at again
    (``infra.hold_checks``)
``{prefix}:webhook:{<target>:<webhook id>}``  a Shopify webhook (``services.webhooks``):
    ``pending`` while one delivery of it is being processed (briefly), ``done`` once the
    broker acknowledged its events (until the dedupe TTL)

A read of a SKU is one HGETALL whose fragments are joined as they are
(``infra.records.join_answer``), so serving a read parses nothing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from availability.ats import SkuAvailability
from infra.config import Settings
from infra.operations_state import OperationsState
from infra.records import (
    RecordWrite,
    decode_held,
    encode_whole,
)
from infra.redis_batch import Combined, Pending, RedisBatch
from infra.redis_client import REDIS_FAILURES, RedisClient, connect
from infra.redis_raw import TOPOLOGY_REPLIES, calls_per_master, pack_command, round_trip
from infra.serving_marks import ServingMarks
from infra.serving_reads import ServingReads
from infra.serving_scripts import KEEP_ANSWER, READ_SERVED, WRITE_RECORD

# Claims a Shopify webhook for processing: nil when this caller got it (marked pending
# for ARGV[1] seconds), else what it is marked (pending: in progress elsewhere; done).
_CLAIM_WEBHOOK = """
local state = redis.call('GET', KEYS[1])
if state then return state end
redis.call('SET', KEYS[1], 'pending', 'EX', ARGV[1])
return false
"""

# Records that the change feed holds ``version`` (never moving backwards).
_MARK_PUBLISHED = """
local f = tonumber(redis.call('HGET', KEYS[1], 'f') or '0')
if f < tonumber(ARGV[1]) then redis.call('HSET', KEYS[1], 'f', ARGV[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class HoldCounts:
    """What a batch of record writes did to reservation holds."""

    handed_over: int
    expired: int


@dataclass(frozen=True, slots=True)
class WriteReply:
    """What one record write did: the version the change feed must carry (0: none),
    whether the write must be made whole, and the SKU's live holds per location
    (what the feed's figures count as reserved besides the folded ones)."""

    version: int
    need_full: bool
    held: dict[str, int]
    touched: tuple[str, ...] = ()  # locations of the holds handed over or purged


class _StaleSlotMap(Exception):
    """A packed batch met a redirection or a master away: send it the slow way."""


async def _loading_script(
    load: Callable[[], Awaitable[Any]], send: Callable[[], Awaitable[list[Any]]]
) -> list[Any]:
    """``send()``'s replies; should the server not know the script (a restarted or
    replaced Redis), ``load()`` it and send once more. A reply that is an error
    raises it."""
    for attempt in (1, 2):
        replies = await send()
        errors = [reply for reply in replies if isinstance(reply, ResponseError)]
        if not errors:
            return replies
        if attempt == 1 and all(isinstance(error, NoScriptError) for error in errors):
            await load()
            continue
        raise errors[0]
    raise AssertionError("unreachable")


class AvailabilityStore(ServingReads, ServingMarks, OperationsState):
    def __init__(self, client: RedisClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._write = client.register_script(WRITE_RECORD)
        self._read_served = client.register_script(READ_SERVED)
        self._keep_answer = client.register_script(KEEP_ANSWER)
        self._mark_published = client.register_script(_MARK_PUBLISHED)
        self._claim_webhook = client.register_script(_CLAIM_WEBHOOK)
        self._init_serving_marks(client, prefix)
        self._init_operations_state(prefix)

    @classmethod
    def from_url(
        cls, url: str, prefix: str, max_connections: int = 200, *, cluster: bool = False
    ) -> AvailabilityStore:
        """A store over a client of ``infra.redis_client.connect`` (``cluster``: a
        Redis Cluster that ``url`` names one node of)."""
        return cls(connect(url, cluster=cluster, max_connections=max_connections), prefix)

    @classmethod
    def for_settings(
        cls, settings: Settings, max_connections: int | None = None
    ) -> AvailabilityStore:
        """The store every process uses: ``Settings.redis_url``, ``redis_cluster``,
        ``redis_key_prefix`` and (unless given) ``redis_max_connections``."""
        return cls.from_url(
            settings.redis_url,
            settings.redis_key_prefix,
            max_connections or settings.redis_max_connections,
            cluster=settings.redis_cluster,
        )

    @property
    def cluster(self) -> bool:
        return isinstance(self.client, RedisCluster)

    async def close(self) -> None:
        await self.client.aclose()

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    def sku_key(self, sku: str) -> str:
        return f"{self.prefix}:sku:{{{sku}}}"

    def holds_key(self, sku: str) -> str:
        """The SKU's reservation holds (``infra.reservation_store``), same slot as its record."""
        return f"{self.prefix}:holds:{{{sku}}}"

    def change_channel(self, sku: str) -> bytes:
        """The sharded pub/sub channel of a SKU's changes (same slot as its record)."""
        return f"{self.prefix}:changes:{{{sku}}}".encode()

    # --- writes (the stream processor) ---

    async def write_records(
        self,
        records: Sequence[SkuAvailability],
        first_version: int | None = None,
        handed_over: Mapping[str, Collection[str]] | None = None,
    ) -> list[int]:
        """Write records whole in one round trip.

        Returns per record the version the change feed must carry, 0 for none (the
        record is unchanged and the feed has it). A record written for the first
        time gets ``first_version`` (the writer's clock in microseconds), which is
        also the clock that decides which reservation holds are still live.
        ``handed_over``: per SKU the reservation ids whose lines the record includes
        (their holds are removed in the same step).
        """
        replies, _ = await self.write_encoded(
            [encode_whole(record) for record in records], first_version, handed_over
        )
        return [reply.version for reply in replies]

    async def write_encoded(
        self,
        writes: Sequence[RecordWrite],
        first_version: int | None = None,
        handed_over: Mapping[str, Collection[str]] | None = None,
    ) -> tuple[list[WriteReply], HoldCounts]:
        """Run the write script for each write (whole or partial,
        ``infra.records.encode_whole`` / ``encode_partial``) in one round trip; also
        returns how many holds were handed over and how many expired ones purged.
        A partial write that needs a whole one (no record yet, or a channel the
        record does not know) writes nothing and answers ``need_full``."""
        if not writes:
            return [], HoldCounts(0, 0)
        if first_version is None:
            first_version = time.time_ns() // 1000
        seed = str(first_version).encode()
        handed_over = handed_over or {}
        calls = []
        for write in writes:
            ids = [rid.encode() for rid in handed_over.get(write.sku, ())]
            calls.append(
                (
                    self.sku_key(write.sku).encode(),
                    self.holds_key(write.sku).encode(),
                    self.change_channel(write.sku),
                    seed,
                    b"%d" % len(ids),
                    *ids,
                    *write.args,
                )
            )
        replies = await self._run_script(self._write, calls, keys=2)
        answers = [
            WriteReply(
                max(int(reply[0]), 0),
                int(reply[0]) < 0,
                decode_held(reply[3]),
                tuple(_text(reply[4]).split()) if len(reply) > 4 else (),
            )
            for reply in replies
        ]
        return answers, HoldCounts(
            sum(int(reply[1]) for reply in replies), sum(int(reply[2]) for reply in replies)
        )

    def mark_published_in(
        self, batch: RedisBatch, versions: Iterable[tuple[str, int]]
    ) -> Combined[None]:
        """``mark_published`` in a batch of other commands."""
        parts: list[Pending[Any]] = [
            batch.script(self._mark_published, [self.sku_key(sku)], [version])
            for sku, version in versions
        ]
        return Combined(parts, lambda _: None)

    async def mark_published(self, versions: Iterable[tuple[str, int]]) -> None:
        """Note that the change feed holds these (sku, version) pairs."""
        calls = [(self.sku_key(sku).encode(), b"%d" % version) for sku, version in versions]
        if calls:
            await self._run_script(self._mark_published, calls)

    async def _run_script(
        self, script: Any, calls: Sequence[Sequence[bytes]], keys: int = 1
    ) -> list[Any]:
        """Run a script of ``keys`` keys once per call (keys first, then its arguments)
        in one round trip.

        EVALSHA directly: redis-py's script objects ask SCRIPT EXISTS before every
        pipeline, a round trip more per batch. Should the server not know the script
        (a restarted or replaced Redis), it is loaded and the calls run again; both
        scripts may run twice without harm (a rewrite of the same record only
        reports its pending version again; a mark never moves backwards).
        """
        if isinstance(self.client, RedisCluster):
            return await self._run_script_cluster(script, calls, keys)
        client = self.client
        payload = b"".join(
            [pack_command((b"EVALSHA", script.sha.encode(), b"%d" % keys, *call)) for call in calls]
        )
        return await _loading_script(
            lambda: client.script_load(script.script),
            lambda: round_trip(client, payload, len(calls)),
        )

    async def _run_script_cluster(
        self, script: Any, calls: Sequence[Sequence[bytes]], keys: int
    ) -> list[Any]:
        """``_run_script`` on a Redis Cluster: each call packed and sent to the master
        of its slot, one round trip per master, concurrently (``infra.redis_raw``).
        Calls answered with a redirection (the slot map is stale, or their slot is
        migrating) run again, those alone, through redis-py's cluster pipeline, which
        follows redirections and refreshes the map: the others ran, and a call run
        twice could find a key its first run emptied, which a migrating slot answers
        with TRYAGAIN. Should a master be away or a connection lost (which calls ran
        is unknown), the whole batch runs again through the pipeline."""
        cluster = cast(RedisCluster, self.client)
        prefix = (b"EVALSHA", script.sha.encode(), b"%d" % keys)

        async def per_master() -> list[Any]:
            try:
                replies = await calls_per_master(cluster, prefix, calls)
            except REDIS_FAILURES as exc:
                raise _StaleSlotMap from exc
            stale = [i for i, reply in enumerate(replies) if isinstance(reply, TOPOLOGY_REPLIES)]
            if stale:
                again = await through_pipeline([calls[i] for i in stale])
                for index, reply in zip(stale, again, strict=True):
                    replies[index] = reply
            return replies

        async def through_pipeline(calls: Sequence[Sequence[bytes]] = calls) -> list[Any]:
            # redis-py's cluster pipeline: per node, following MOVED/ASK, refreshing
            # the slot map.
            pipe = cluster.pipeline(transaction=False)
            for call in calls:
                pipe.execute_command("EVALSHA", script.sha, keys, *call)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            for reply in replies:
                # A call it could not deliver (a node lost, redirections that did
                # not settle) is answered with the exception in place: raise it.
                if isinstance(reply, Exception) and not isinstance(reply, ResponseError):
                    raise reply
            return replies

        async def load() -> None:
            # SCRIPT LOAD goes to every master: one restarted empty, or a new one.
            await cluster.script_load(script.script)

        try:
            return await _loading_script(load, per_master)
        except _StaleSlotMap:
            return await _loading_script(load, through_pipeline)

    # --- Shopify webhooks (services.webhooks) ---

    def webhook_key(self, target: str, webhook_id: str) -> str:
        return f"{self.prefix}:webhook:{{{target}:{webhook_id}}}"

    async def claim_webhook(self, target: str, webhook_id: str, seconds: int) -> str | None:
        """None: the caller may process the webhook (it is marked ``pending`` for
        ``seconds``); else ``pending`` (another delivery is being processed) or
        ``done``."""
        state = await self._claim_webhook(
            keys=[self.webhook_key(target, webhook_id)], args=[seconds]
        )
        return None if state is None else _text(state)

    async def webhook_done(self, target: str, webhook_id: str, ttl: int) -> None:
        """The webhook's events are acknowledged: repeats are dropped for ``ttl`` seconds."""
        await self.client.set(self.webhook_key(target, webhook_id), b"done", ex=ttl)

    async def release_webhook(self, target: str, webhook_id: str) -> None:
        """Processing failed: a retry of the webhook may claim it at once."""
        await self.client.delete(self.webhook_key(target, webhook_id))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
