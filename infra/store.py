"""All Redis access: the serving records, worker status and shared counters.

Layout (every key carries a hash tag, so a Redis Cluster can spread SKUs):

``{prefix}:sku:{<sku>}``  hash, one per SKU
    ``v``          version: +1 on every change of the record (see ``_WRITE_RECORD``)
    ``f``          the latest version the durable change feed has acknowledged
    ``d``          canonical JSON of the SKU's availability (all channels)
    ``c:<channel>`` ready-to-send answer tail for a channel that rules give a buffer
    ``*``          the same for every other channel (buffer 0)
``{prefix}:workers``  hash worker id -> JSON status (heartbeat, lag, recovered)
``{prefix}:counters`` hash counter name -> integer (events folded, dead letters)
``{prefix}:drift``    JSON of the last drift check's counts (``services.cli drift``)
``{prefix}:serving``  hash: how complete the serving records are (``streams.rebuild``)
    ``epoch``      token of the rebuild under way or done since Redis last lost its data
    ``partitions`` how many partitions the SKUs are spread over
    ``p:<n>``      the epoch in which partition n's records were all written
``{prefix}:serving:{m<n>}``  Redis Cluster only: the epoch again, once per master (the
    smallest n whose slot that master owns), so that a master that lost its data (its
    share of the records) voids the epoch like a single Redis losing everything
``{prefix}:changes:{<sku>}``  sharded pub/sub channel: ``<version> <d>`` on every change
``{prefix}:webhook:{<target>:<webhook id>}``  a Shopify webhook (``services.webhooks``):
    ``pending`` while one delivery of it is being processed (briefly), ``done`` once the
    broker acknowledged its events (until the dedupe TTL)

An answer tail is the JSON of ``{"ats": .., "locations": [..]}`` without its
opening brace; a read puts ``{"sku":..,"channel":..,`` in front of it, so serving a
read parses nothing.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from availability.ats import SkuAvailability
from availability.holds import Hold, with_holds
from infra.config import Settings
from infra.records import DEFAULT_FIELD, answer_tail, encode_record
from infra.redis_client import REDIS_FAILURES, RedisClient, connect
from infra.redis_raw import TOPOLOGY_REPLIES, calls_per_master, pack_command, round_trip
from infra.serving_marks import ServingMarks

#: In a record: the latest deadline (ms) of the SKU's reservation holds, while it has any.
HOLDS_FIELD = b"h"

# Writes a record only when its canonical form changed, bumps its version and
# announces the change on the SKU's sharded channel, all in one step, so a watcher
# never sees a change that the record does not hold, nor the other way round.
# A record's first version is the writer's clock in microseconds (ARGV[3]) rather
# than 1: a record rebuilt after Redis lost its data then starts above every
# version it had before, and consumers that skip versions they have seen lose
# nothing. Versions are formatted with %d: Lua would print them as 1.79e+15.
# In the same step it hands reservation holds over to the record: the holds of the
# reservation ids ARGV[5..4+ARGV[4]] (lines whose events the written figures
# include) are removed from the SKU's holds (KEYS[2]), so that a hold stops counting
# exactly when the figures start to; 'h' is set to the latest deadline of the holds
# left (absent when none), which tells reads whether to count holds at all.
# Holds past their deadline (never handed over) are purged on the way.
# Returns {the version the change feed still has to carry (a change now, or an
# earlier one the feed never acknowledged) else 0, how many holds were handed over,
# how many expired holds were purged}.
_WRITE_RECORD = """
local n = tonumber(ARGV[4])
local handed = 0
if n > 0 then handed = redis.call('HDEL', KEYS[2], unpack(ARGV, 5, 4 + n)) end
local now = math.floor(tonumber(ARGV[3]) / 1000)
local latest = 0
local expired = 0
local holds = redis.call('HGETALL', KEYS[2])
for i = 1, #holds, 2 do
  local deadline = tonumber(string.match(holds[i + 1], ' (%d+)$'))
  if deadline <= now then
    redis.call('HDEL', KEYS[2], holds[i])
    expired = expired + 1
  elseif deadline > latest then
    latest = deadline
  end
end
local cur = redis.call('HMGET', KEYS[1], 'd', 'v', 'f')
local v = tonumber(cur[2] or '0')
local f = tonumber(cur[3] or '0')
if cur[1] == ARGV[1] then
  if latest > 0 then
    redis.call('HSET', KEYS[1], 'h', string.format('%d', latest))
  else
    redis.call('HDEL', KEYS[1], 'h')
  end
  if f < v then return {v, handed, expired} end
  return {0, handed, expired}
end
if v == 0 then v = tonumber(ARGV[3]) else v = v + 1 end
local version = string.format('%d', v)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', version, 'f', string.format('%d', f), 'd', ARGV[1],
           unpack(ARGV, 5 + n))
if latest > 0 then redis.call('HSET', KEYS[1], 'h', string.format('%d', latest)) end
redis.call('SPUBLISH', ARGV[2], version .. ' ' .. ARGV[1])
return {v, handed, expired}
"""

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


class AvailabilityStore(ServingMarks):
    def __init__(self, client: RedisClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._write = client.register_script(_WRITE_RECORD)
        self._mark_published = client.register_script(_MARK_PUBLISHED)
        self._claim_webhook = client.register_script(_CLAIM_WEBHOOK)
        self._workers_key = f"{prefix}:workers"
        self._counters_key = f"{prefix}:counters"
        self._drift_key = f"{prefix}:drift"
        self._init_serving_marks(client, prefix)

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
        """Write records in one round trip.

        Returns per record the version the change feed must carry, 0 for none (the
        record is unchanged and the feed has it). A record written for the first
        time gets ``first_version`` (the writer's clock in microseconds), which is
        also the clock that decides which reservation holds are still live.
        ``handed_over``: per SKU the reservation ids whose lines the record includes
        (their holds are removed in the same step).
        """
        versions, _ = await self.write_encoded(
            [(record.sku, encode_record(record)) for record in records],
            first_version,
            handed_over,
        )
        return versions

    async def write_encoded(
        self,
        records: Sequence[tuple[str, Sequence[bytes]]],
        first_version: int | None = None,
        handed_over: Mapping[str, Collection[str]] | None = None,
    ) -> tuple[list[int], HoldCounts]:
        """``write_records`` of records already encoded (``(sku, encode_record(...))``);
        also returns how many holds were handed over and how many expired ones purged."""
        if not records:
            return [], HoldCounts(0, 0)
        if first_version is None:
            first_version = time.time_ns() // 1000
        seed = str(first_version).encode()
        handed_over = handed_over or {}
        calls = []
        for sku, (data, *fields) in records:
            ids = [rid.encode() for rid in handed_over.get(sku, ())]
            calls.append(
                (
                    self.sku_key(sku).encode(),
                    self.holds_key(sku).encode(),
                    data,
                    self.change_channel(sku),
                    seed,
                    b"%d" % len(ids),
                    *ids,
                    *fields,
                )
            )
        replies = await self._run_script(self._write, calls, keys=2)
        return [int(v) for v, _, _ in replies], HoldCounts(
            sum(int(handed) for _, handed, _ in replies),
            sum(int(expired) for _, _, expired in replies),
        )

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
        sha = script.sha.encode()
        numkeys = b"%d" % keys
        payload = b"".join([pack_command((b"EVALSHA", sha, numkeys, *call)) for call in calls])
        for attempt in (1, 2):
            replies = await round_trip(self.client, payload, len(calls))
            errors = [reply for reply in replies if isinstance(reply, ResponseError)]
            if not errors:
                return replies
            if attempt == 1 and all(isinstance(error, NoScriptError) for error in errors):
                await self.client.script_load(script.script)
                continue
            raise errors[0]
        raise AssertionError("unreachable")

    async def _run_script_cluster(
        self, script: Any, calls: Sequence[Sequence[bytes]], keys: int
    ) -> list[Any]:
        """``_run_script`` on a Redis Cluster: each call packed and sent to the master
        of its slot, one round trip per master, concurrently (``infra.redis_raw``).
        Should the slot map be stale (a redirection, a master away), the batch runs
        again through redis-py's cluster pipeline, which follows redirections and
        refreshes the map."""
        cluster = cast(RedisCluster, self.client)
        prefix = (b"EVALSHA", script.sha.encode(), b"%d" % keys)
        for attempt in (1, 2):
            try:
                replies = await calls_per_master(cluster, prefix, calls)
            except REDIS_FAILURES:
                return await self._run_script_pipeline(script, calls, keys)
            if any(isinstance(reply, TOPOLOGY_REPLIES) for reply in replies):
                return await self._run_script_pipeline(script, calls, keys)
            errors = [reply for reply in replies if isinstance(reply, ResponseError)]
            if not errors:
                return replies
            if attempt == 1 and all(isinstance(error, NoScriptError) for error in errors):
                # SCRIPT LOAD goes to every master: one restarted empty, or a new one.
                await cluster.script_load(script.script)
                continue
            raise errors[0]
        raise AssertionError("unreachable")

    async def _run_script_pipeline(
        self, script: Any, calls: Sequence[Sequence[bytes]], keys: int
    ) -> list[Any]:
        """``_run_script`` through redis-py's cluster pipeline (per node, following
        MOVED/ASK, refreshing the slot map)."""
        cluster = cast(RedisCluster, self.client)
        for attempt in (1, 2):
            pipe = cluster.pipeline(transaction=False)
            for call in calls:
                pipe.execute_command("EVALSHA", script.sha, keys, *call)
            replies = await pipe.execute(raise_on_error=False)
            errors = [reply for reply in replies if isinstance(reply, ResponseError)]
            if not errors:
                return replies
            if attempt == 1 and all(isinstance(error, NoScriptError) for error in errors):
                await cluster.script_load(script.script)
                continue
            raise errors[0]
        raise AssertionError("unreachable")

    # --- reads (the APIs) ---

    async def read_tail(self, sku: str, channel: str) -> bytes | None:
        channel_tail, default_tail, holds_until = await self.client.hmget(
            self.sku_key(sku), [b"c:" + channel.encode(), DEFAULT_FIELD, HOLDS_FIELD]
        )
        tail = cast(bytes | None, channel_tail or default_tail)
        if tail is None or not _holds_live(holds_until):
            return tail
        return (await self._tails_with_holds([sku], channel))[0] or tail

    async def read_tails(self, skus: Sequence[str], channel: str) -> list[bytes | None]:
        fields = [b"c:" + channel.encode(), DEFAULT_FIELD, HOLDS_FIELD]
        tails: list[bytes | None] = []
        held: list[int] = []
        for index, (channel_tail, default_tail, holds_until) in enumerate(
            await self._hmget_many([self.sku_key(sku).encode() for sku in skus], fields)
        ):
            tails.append(channel_tail or default_tail)
            if tails[-1] is not None and _holds_live(holds_until):
                held.append(index)
        if held:
            recounted = await self._tails_with_holds([skus[i] for i in held], channel)
            for index, tail in zip(held, recounted, strict=True):
                if tail is not None:
                    tails[index] = tail
        return tails

    async def _hmget_many(self, keys: Sequence[bytes], fields: Sequence[bytes]) -> list[Any]:
        """HMGET of each key in one round trip (a cluster: one per master, concurrently),
        packed as the writes are (``infra.redis_raw``); in a cluster whose slot map is
        stale, through redis-py's cluster pipeline."""
        if not keys:
            return []
        if isinstance(self.client, RedisCluster):
            try:
                replies = await calls_per_master(
                    self.client, (b"HMGET",), [(key, *fields) for key in keys]
                )
            except REDIS_FAILURES:
                replies = None
            if replies is not None and not any(
                isinstance(reply, TOPOLOGY_REPLIES) for reply in replies
            ):
                for reply in replies:
                    if isinstance(reply, ResponseError):
                        raise reply
                return replies
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(key, fields)
            return await pipe.execute()
        # A single Redis: packed the same way (redis-py's pipeline cost more than twice
        # the CPU per batch: BENCHMARKS.md "Redis Cluster").
        payload = b"".join([pack_command((b"HMGET", key, *fields)) for key in keys])
        replies = await round_trip(self.client, payload, len(keys))
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    async def _tails_with_holds(self, skus: Sequence[str], channel: str) -> list[bytes | None]:
        """Answer tails that count the SKUs' live reservation holds as reserved: read
        your writes, before the worker has folded the reservations (README
        "Reservations"). Only SKUs with holds take this path."""
        return [
            None if availability is None else answer_tail(availability, channel)
            for availability in await self._read_with_holds(skus)
        ]

    async def _read_with_holds(self, skus: Sequence[str]) -> list[SkuAvailability | None]:
        pipe = self.client.pipeline(transaction=False)
        for sku in skus:
            pipe.hget(self.sku_key(sku), b"d")
            pipe.hgetall(self.holds_key(sku))
        replies = await pipe.execute()
        now = time.time_ns() // 1_000_000
        answers: list[SkuAvailability | None] = []
        for index in range(len(skus)):
            raw, holds = replies[2 * index], replies[2 * index + 1]
            if raw is None:
                answers.append(None)
                continue
            availability = SkuAvailability.from_data(orjson.loads(raw))
            answers.append(
                with_holds(availability, [Hold.decode(_text(r), v) for r, v in holds.items()], now)
            )
        return answers

    async def read_versions(self, skus: Sequence[str]) -> list[tuple[int, SkuAvailability | None]]:
        """Each SKU's version and figures, in one round trip; (0, None) if never seen."""
        pipe = self.client.pipeline(transaction=False)
        for sku in skus:
            pipe.hmget(self.sku_key(sku), [b"v", b"d"])
        answers: list[tuple[int, SkuAvailability | None]] = []
        for version, data in await pipe.execute():
            if data is None:
                answers.append((0, None))
            else:
                answers.append((int(version), SkuAvailability.from_data(orjson.loads(data))))
        return answers

    async def read_availability(self, sku: str) -> SkuAvailability | None:
        """The SKU's figures, its live reservation holds counted as reserved."""
        raw, holds_until = await self.client.hmget(self.sku_key(sku), [b"d", HOLDS_FIELD])
        if raw is None:
            return None
        if _holds_live(holds_until):
            return (await self._read_with_holds([sku]))[0]
        return SkuAvailability.from_data(orjson.loads(raw))

    # --- worker status and counters ---

    async def report_worker(self, worker_id: str, status: Mapping[str, Any]) -> None:
        payload = orjson.dumps({**status, "ts": time.time()})
        await self.client.hset(self._workers_key, worker_id, payload)

    async def remove_worker(self, worker_id: str) -> None:
        await self.client.hdel(self._workers_key, worker_id)

    async def workers(self, max_age: float) -> dict[str, dict[str, Any]]:
        """Statuses reported within ``max_age`` seconds; older ones are dropped."""
        now = time.time()
        raw = await self.client.hgetall(self._workers_key)
        fresh: dict[str, dict[str, Any]] = {}
        stale: list[bytes | str] = []
        for worker_id, payload in raw.items():
            status = orjson.loads(payload)
            if now - float(status.get("ts", 0)) <= max_age:
                fresh[_text(worker_id)] = status
            else:
                stale.append(worker_id)
        if stale:
            await self.client.hdel(self._workers_key, *stale)
        return fresh

    async def add_counts(self, counts: Mapping[str, int]) -> None:
        if not counts:
            return
        pipe = self.client.pipeline(transaction=False)
        for name, amount in counts.items():
            pipe.hincrby(self._counters_key, name, amount)
        await pipe.execute()

    async def save_drift(self, by_cause: Mapping[str, int], *, rows: int, bad_lines: int) -> None:
        """The last drift check's counts, for the API's /metrics."""
        payload = {
            "checked_at": time.time(),
            "by_cause": dict(by_cause),
            "rows": rows,
            "bad_lines": bad_lines,
        }
        await self.client.set(self._drift_key, orjson.dumps(payload))

    async def drift(self) -> dict[str, Any] | None:
        raw = await self.client.get(self._drift_key)
        return None if raw is None else cast(dict[str, Any], orjson.loads(raw))

    async def counts(self) -> dict[str, int]:
        raw = await self.client.hgetall(self._counters_key)
        return {_text(name): int(value) for name, value in raw.items()}

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


def _holds_live(holds_until: bytes | str | None) -> bool:
    """Whether a record's ``h`` says some hold may still count."""
    return holds_until is not None and int(holds_until) > time.time_ns() // 1_000_000


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
