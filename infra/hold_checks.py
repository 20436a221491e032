"""When the worker must look at a reservation hold again (README "Reservations").

The reservation API changes what a SKU's record serves (a hold placed or removed
bumps the record's version and is announced at once, ``infra.reservation_store``)
and puts the change on the change feed itself. Two things can leave the feed
behind: the API dies before its feed record is acknowledged, and a hold that is
never handed over (its event never reached the broker) reaches its deadline, which
changes what the record serves with nobody acting at that instant. So every line the
API touches is noted here, with the time by which it must be looked at again, and
the worker owning the SKU looks at it then (``streams.hold_sweep``): it purges the
holds past their deadline (announcing the change like any other), puts what the
record serves at its current version at the line's location (and at those of the
holds purged) on the feed, and notes the next time to look, the deadline of the
line's hold while it lives.

Keys: ``{prefix}:hold-checks:{<partition>}``, a sorted set per partition of the
input topics (the worker that owns the partition owns its SKUs): member
``<sku> <reservation id>`` (neither has spaces), score the time to look (ms since
the epoch).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from availability.ats import SkuAvailability
from availability.holds import with_held
from infra.kafka import partition_for
from infra.records import decode_held, locations_from_flat
from infra.redis_batch import Combined, Pending, RedisBatch, run_alone
from infra.serving_scripts import (
    ANNOUNCE_LUA,
    DROP_GONE_LUA,
    FRAGMENTS_LUA,
    HELD_JSON_LUA,
    LIVE_HOLDS_LUA,
)
from infra.store import AvailabilityStore

# Purges the SKU's expired holds (announcing the change when there were any, as the
# other scripts do) and returns what the record serves now at the locations that
# matter to the lines looked at: the locations of the holds purged, of the lines'
# holds and those the worker names (where its state has the lines). {version, holds
# per location as JSON, expired, c, fragments (``fragments_of``), then reservation id,
# deadline of every live hold}; {0} when the SKU has no record.
# KEYS: the SKU's record, its holds. ARGV: now ms, change channel, n, n reservation
# ids, locations...
_REFRESH = (
    """
if redis.call('HEXISTS', KEYS[1], 'c') == 0 then return {0} end
local now = tonumber(ARGV[1])
local channel = ARGV[2]
local drop = {}
"""
    + LIVE_HOLDS_LUA
    + FRAGMENTS_LUA
    + DROP_GONE_LUA
    + HELD_JSON_LUA
    + """
local n = tonumber(ARGV[3])
for i = 4, 3 + n do
  if where[ARGV[i]] then touched[where[ARGV[i]]] = true end
end
for i = 4 + n, #ARGV do touched[ARGV[i]] = true end
local served_version
if lapsed then
"""
    + ANNOUNCE_LUA
    + """
  served_version = version
else
  served_version = redis.call('HGET', KEYS[1], 'v')
end
if lapsed and expired == 0 then expired = 1 end  -- gone with the holds key
local c, fragments = fragments_of(touched)
local answer = {served_version, held_json, expired, c, fragments}
for rid, deadline in pairs(live) do
  answer[#answer + 1] = rid
  answer[#answer + 1] = string.format('%d', deadline)
end
return answer
"""
)

# Moves a check (ARGV[1]) to ARGV[3] ms, or removes it when ARGV[3] is 0, only if it
# is still due at ARGV[2]: the API may have noted the line again meanwhile.
_RESCHEDULE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
if tonumber(ARGV[3]) > 0 then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Refreshed:
    """What a SKU's record serves after its expired holds were purged."""

    version: int
    served: SkuAvailability  # at the locations asked about and those of purged holds
    live: dict[str, int]  # reservation id -> deadline (ms) of each live hold
    expired: int  # holds purged (past their deadline, never handed over)


@dataclass(frozen=True, slots=True)
class Check:
    partition: int
    sku: str
    reservation_id: str
    due: int  # ms since the epoch

    @property
    def member(self) -> str:
        return f"{self.sku} {self.reservation_id}"


class HoldChecks:
    def __init__(self, store: AvailabilityStore, partitions: int) -> None:
        self.store = store
        self.partitions = partitions
        self._refresh = store.client.register_script(_REFRESH)
        self._reschedule = store.client.register_script(_RESCHEDULE)

    def key(self, partition: int) -> str:
        return f"{self.store.prefix}:hold-checks:{{{partition}}}"

    def partition_of(self, sku: str) -> int:
        return partition_for(sku.encode(), self.partitions)

    def note_in(
        self, batch: RedisBatch, lines: Sequence[tuple[str, str]], due: int
    ) -> Combined[None]:
        """Look at these (sku, reservation id) lines again at ``due`` (ms)."""
        parts: list[Pending[Any]] = [
            batch.command("ZADD", self.key(self.partition_of(sku)), due, f"{sku} {rid}")
            for sku, rid in lines
        ]
        return Combined(parts, lambda _: None)

    async def note(self, lines: Sequence[tuple[str, str]], due: int) -> None:
        await run_alone(self.store.client, lambda b: self.note_in(b, lines, due))

    async def forget(self, lines: Sequence[tuple[str, str]]) -> None:
        """No need to look at these (sku, reservation id) lines again."""
        pipe = self.store.client.pipeline(transaction=False)
        for sku, rid in lines:
            pipe.zrem(self.key(self.partition_of(sku)), f"{sku} {rid}")
        await pipe.execute()

    async def due(self, partition: int, now: int, limit: int) -> list[Check]:
        """The checks of ``partition`` due by ``now``, earliest first, at most ``limit``."""
        return await self.due_in([partition], now, limit)

    async def due_in(self, partitions: Iterable[int], now: int, limit: int) -> list[Check]:
        """``due`` for every one of ``partitions``, in one round trip (per node of a
        cluster): the worker asks for all the partitions it owns on every tick."""
        ordered = sorted(partitions)
        if not ordered:
            return []
        pipe = self.store.client.pipeline(transaction=False)
        for partition in ordered:
            pipe.zrangebyscore(
                self.key(partition), "-inf", now, start=0, num=limit, withscores=True
            )
        checks = []
        for partition, raw in zip(ordered, await pipe.execute(), strict=True):
            for member, score in cast(list[tuple[bytes, float]], raw):
                sku, _, rid = member.decode().partition(" ")
                checks.append(Check(partition, sku, rid, int(score)))
        return checks

    async def refresh(
        self,
        sku: str,
        now: int,
        reservation_ids: Sequence[str] = (),
        locations: Iterable[str] = (),
    ) -> Refreshed | None:
        """Purge the SKU's expired holds; what its record serves now (None: no record)
        at the locations of the holds purged, of these reservations' holds and
        ``locations``."""
        reply = cast(
            list[Any],
            await self._refresh(
                keys=[self.store.sku_key(sku), self.store.holds_key(sku)],
                args=[
                    now,
                    self.store.change_channel(sku),
                    len(reservation_ids),
                    *reservation_ids,
                    *sorted(set(locations)),
                ],
            ),
        )
        if len(reply) == 1:
            return None
        version, held, expired, channels, fragments, *pairs = reply
        live = {_text(pairs[i]): int(pairs[i + 1]) for i in range(0, len(pairs), 2)}
        served = with_held(
            SkuAvailability(sku, tuple(locations_from_flat(channels, fragments)), None),
            decode_held(held),
        )
        return Refreshed(int(version), served, live, int(expired))

    async def reschedule(self, check: Check, due: int | None) -> bool:
        """Move ``check`` to ``due`` (None: drop it), unless it was noted again since
        it was read; True if it was moved or dropped."""
        return bool(
            await self._reschedule(
                keys=[self.key(check.partition)], args=[check.member, check.due, due or 0]
            )
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
