"""Redis side of the reservation API: holds, placed and checked atomically, and the
reservations' idempotency records (README "Reservations").

Layout (beside ``infra.store``'s; ``<sku>`` in braces is the hash tag, so a SKU's holds
live in the same Redis Cluster slot as its serving record):

``{prefix}:holds:{<sku>}``  hash reservation id -> ``<location> <quantity> <deadline ms>``
    the holds the fold may not have seen yet (``availability.holds.Hold``); the key
    expires at its latest deadline, and expired entries are purged by every script
    that reads them
``{prefix}:reservation:{<reservation id>}``  JSON of the reservation as the API
    answered it (state ``placing`` while a request places it; ``held``; ``released``)

Every script touches the keys of one SKU only (one slot): a reservation of several
SKUs places its holds SKU by SKU and takes back those it placed when a later one does
not fit (``services.reservations``). Nothing can be oversold on the way: each hold
is checked against the figures and every hold already placed, in one step, so a
hold taken back only ever makes a concurrent check stricter than it had to be.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from availability.ats import SkuAvailability
from availability.holds import Hold, with_held
from infra.records import decode_held, locations_from_flat, record_from_fields
from infra.redis_batch import Combined, Pending, RedisBatch, Reply, run_alone
from infra.redis_client import RedisClient
from infra.serving_scripts import (
    ANNOUNCE_LUA,
    DROP_GONE_LUA,
    FRAGMENTS_LUA,
    HELD_JSON_LUA,
    LIVE_HOLDS_LUA,
)
from infra.store import AvailabilityStore

# Purges expired holds, then places ARGV[1]'s hold at the first candidate location
# (ARGV[7..]) where it fits: on_hand - reserved - held - safety_stock - buffer(channel)
# >= quantity, with the folded figures of that location in the SKU's record (its
# `b:<channel>:` fragment, else its `a:` one: only the candidates are read) and the
# SKU's live holds. A hold this reservation already has (a retry after a crash) is
# replaced, not added.
# When the holds changed (placed, replaced or purged), the record's version is bumped
# and the change announced on the SKU's channel (ARGV[6]), as the worker's write does
# (``infra.serving_scripts``): Watch shows the hold at once.
# KEYS: the SKU's record, its holds. ARGV: reservation id, channel, quantity, now ms,
# deadline ms, the SKU's change channel, candidate locations...
# Returns {1, location, expired, version, holds per location as JSON, c, fragments of
# the locations whose holds changed (``fragments_of``)} when placed, else {0, best
# free units, expired, version (0: unchanged), holds, c, fragments}.
_PLACE_HOLD = (
    """
local now = tonumber(ARGV[4])
local channel = ARGV[6]
local drop = {[ARGV[1]] = true}
"""
    + LIVE_HOLDS_LUA
    + FRAGMENTS_LUA
    + """
local replaced = dropped
local best = 0
local placed = false
local exists = redis.call('HEXISTS', KEYS[1], 'c') == 1
if exists then
  local quantity = tonumber(ARGV[3])
  for i = 7, #ARGV do
    local got = redis.call('HMGET', KEYS[1], 'b:' .. ARGV[2] .. ':' .. ARGV[i], 'a:' .. ARGV[i])
    local raw = got[1] or got[2]
    if raw then
      local l = cjson.decode(raw)
      local free = l['on_hand'] - l['reserved'] - (held[ARGV[i]] or 0) - l['safety_stock']
        - l['buffer']
      if free >= quantity then
        redis.call('HSET', KEYS[2], ARGV[1], ARGV[i] .. ' ' .. ARGV[3] .. ' ' .. ARGV[5])
        held[ARGV[i]] = (held[ARGV[i]] or 0) + quantity
        placed = ARGV[i]
        touched[placed] = true
        local deadline = tonumber(ARGV[5])
        if deadline > latest then latest = deadline end
        redis.call('PEXPIREAT', KEYS[2], latest)
        break
      end
      if free > best then best = free end
    end
  end
end
if placed then  -- the hold it replaced is overwritten, not removed
  for i = #gone, 1, -1 do
    if gone[i] == ARGV[1] then table.remove(gone, i) end
  end
end
"""
    + DROP_GONE_LUA
    + """
if not exists or (not placed and replaced == 0 and not lapsed) then
  return {0, string.format('%d', best), expired, 0, '', '', {}}
end
"""
    + HELD_JSON_LUA
    + ANNOUNCE_LUA
    + """
local c, fragments = fragments_of(touched)
if placed then return {1, placed, expired, version, held_json, c, fragments} end
return {0, string.format('%d', best), expired, version, held_json, c, fragments}
"""
)

# Removes a hold (a release, or a hold taken back); when the holds changed (removed,
# or expired ones purged), bumps the record's version and announces the change on
# the SKU's channel, as placing does.
# KEYS: the SKU's record, its holds. ARGV: reservation id, now ms, the change channel.
# Returns {1 if the hold was there else 0, version (0: unchanged), holds as JSON, c,
# fragments of the locations whose holds changed}.
_REMOVE_HOLD = (
    """
local now = tonumber(ARGV[2])
local channel = ARGV[3]
local drop = {[ARGV[1]] = true}
"""
    + LIVE_HOLDS_LUA
    + FRAGMENTS_LUA
    + DROP_GONE_LUA
    + """
local removed = dropped
if (removed == 0 and not lapsed) or redis.call('HEXISTS', KEYS[1], 'c') == 0 then
  return {removed, 0, '', '', {}}
end
"""
    + HELD_JSON_LUA
    + ANNOUNCE_LUA
    + """
local c, fragments = fragments_of(touched)
return {removed, version, held_json, c, fragments}
"""
)

# Moves a hold's deadline (ARGV[2]) if the hold is still there (not handed over,
# not expired); 1 if it was. The record's 'h' (the latest deadline of the SKU's holds,
# which tells reads to count them) and the key's expiry follow.
# KEYS: the SKU's record, its holds. ARGV: reservation id, deadline ms.
_MOVE_DEADLINE = """
local value = redis.call('HGET', KEYS[2], ARGV[1])
if not value then return 0 end
local loc, qty = string.match(value, '^(%S+) (%d+) ')
local deadline = tonumber(ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], loc .. ' ' .. qty .. ' ' .. ARGV[2])
if redis.call('PEXPIRETIME', KEYS[2]) < deadline then
  redis.call('PEXPIREAT', KEYS[2], ARGV[2])
end
if tonumber(redis.call('HGET', KEYS[1], 'h') or '0') < deadline then
  redis.call('HSET', KEYS[1], 'h', ARGV[2])
end
return 1
"""

# Stores a reservation record (ARGV[1], for ARGV[2] ms) unless there is one: false
# when stored, else the record there.
_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""


#: A SKU's folded figures (None: never seen) and its holds.
Figures = tuple[SkuAvailability | None, list[Hold]]


@dataclass(frozen=True, slots=True)
class Placement:
    """The outcome of one hold: placed at ``location_id``, or not (``best_free``: the
    most units a hold could have taken at a candidate)."""

    location_id: str | None
    best_free: int
    expired: int  # expired holds purged on the way
    change: ServedChange | None = None  # the record's new version, if the holds changed


@dataclass(frozen=True, slots=True)
class ServedChange:
    """A change of what a SKU's record serves, made by placing or removing a hold: the
    record's new version and the figures it serves at that version (holds counted) at
    the locations whose holds changed (the SKU's other locations are left out)."""

    sku: str
    version: int
    served: SkuAvailability


class ReservationStore:
    def __init__(self, store: AvailabilityStore) -> None:
        self.store = store
        self.client: RedisClient = store.client
        self.prefix = store.prefix
        self._place = self.client.register_script(_PLACE_HOLD)
        self._move = self.client.register_script(_MOVE_DEADLINE)
        self._remove = self.client.register_script(_REMOVE_HOLD)
        self._claim = self.client.register_script(_CLAIM)

    def holds_key(self, sku: str) -> str:
        return self.store.holds_key(sku)

    def reservation_key(self, reservation_id: str) -> str:
        return f"{self.prefix}:reservation:{{{reservation_id}}}"

    # --- holds ---
    # Each ``*_in`` method adds its command to a batch (``infra.redis_batch``), so
    # that a request does what it has to at once; the plain methods run one alone.

    def place_in(
        self,
        batch: RedisBatch,
        sku: str,
        reservation_id: str,
        channel: str,
        quantity: int,
        candidates: Sequence[str],
        now: int,
        deadline: int,
    ) -> Pending[Placement]:
        """Hold ``quantity`` units at the first of ``candidates`` where they fit, in one
        atomic step with the check."""

        def decode(reply: Any) -> Placement:
            placed, value, expired, version, held, channels, fragments = reply
            change = _change(sku, version, held, channels, fragments)
            if int(placed):
                return Placement(_text(value), quantity, int(expired), change)
            return Placement(None, int(value), int(expired), change)

        return batch.script(
            self._place,
            [self.store.sku_key(sku), self.holds_key(sku)],
            [
                reservation_id,
                channel,
                quantity,
                now,
                deadline,
                self.store.change_channel(sku),
                *candidates,
            ],
            decode,
        )

    async def place(
        self,
        sku: str,
        reservation_id: str,
        channel: str,
        quantity: int,
        candidates: Sequence[str],
        now: int,
        deadline: int,
    ) -> Placement:
        return await run_alone(
            self.client,
            lambda b: self.place_in(
                b, sku, reservation_id, channel, quantity, candidates, now, deadline
            ),
        )

    def move_deadline_in(
        self, batch: RedisBatch, sku: str, reservation_id: str, deadline: int
    ) -> Pending[bool]:
        """Give a hold a new deadline; False when the hold is gone (expired meanwhile)."""
        return batch.script(
            self._move,
            [self.store.sku_key(sku), self.holds_key(sku)],
            [reservation_id, deadline],
            bool,
        )

    def remove_in(
        self, batch: RedisBatch, sku: str, reservation_id: str, now: int
    ) -> Pending[ServedChange | None]:
        """Remove a hold (``now`` in ms purges expired ones on the way); the change of
        what the record serves, None when nothing changed."""

        def decode(reply: Any) -> ServedChange | None:
            _, version, held, channels, fragments = reply
            return _change(sku, version, held, channels, fragments)

        return batch.script(
            self._remove,
            [self.store.sku_key(sku), self.holds_key(sku)],
            [reservation_id, now, self.store.change_channel(sku)],
            decode,
        )

    async def remove(self, sku: str, reservation_id: str, now: int) -> ServedChange | None:
        return await run_alone(self.client, lambda b: self.remove_in(b, sku, reservation_id, now))

    def figures_in(self, batch: RedisBatch, skus: Sequence[str]) -> Reply[list[Figures]]:
        """Each SKU's folded figures (None: never seen) and its holds (expired ones
        included: callers filter with their clock)."""
        parts: list[Pending[Any]] = []
        for sku in skus:
            parts.append(batch.command("HGETALL", self.store.sku_key(sku), read=True))
            parts.append(batch.command("HGETALL", self.holds_key(sku), read=True))

        def combine(replies: list[Any]) -> list[Figures]:
            answers: list[Figures] = []
            for sku, raw, holds in zip(skus, replies[::2], replies[1::2], strict=True):
                figures = record_from_fields(sku, _pairs(raw))
                answers.append(
                    (figures, [Hold.decode(_text(f), v) for f, v in _pairs(holds).items()])
                )
            return answers

        return Combined(parts, combine)

    async def figures(self, skus: Sequence[str]) -> list[Figures]:
        """``figures_in`` in one round trip."""
        return await run_alone(self.client, lambda b: self.figures_in(b, skus))

    # --- reservation records ---

    def claim_in(
        self, batch: RedisBatch, reservation_id: str, record: dict[str, Any], ttl_ms: int
    ) -> Pending[Any]:
        """Store ``record`` unless the reservation has one: None when stored, else the
        record it has."""
        return batch.script(
            self._claim,
            [self.reservation_key(reservation_id)],
            [orjson.dumps(record), ttl_ms],
            lambda raw: None if raw is None else orjson.loads(raw),
        )

    async def claim(self, reservation_id: str, record: dict[str, Any], ttl_ms: int) -> Any:
        return await run_alone(
            self.client, lambda b: self.claim_in(b, reservation_id, record, ttl_ms)
        )

    def save_in(
        self, batch: RedisBatch, reservation_id: str, record: dict[str, Any], ttl_ms: int
    ) -> Pending[Any]:
        return batch.command(
            "SET", self.reservation_key(reservation_id), orjson.dumps(record), "PX", ttl_ms
        )

    async def save(self, reservation_id: str, record: dict[str, Any], ttl_ms: int) -> None:
        await self.client.set(self.reservation_key(reservation_id), orjson.dumps(record), px=ttl_ms)

    async def load(self, reservation_id: str) -> Any:
        raw = await self.client.get(self.reservation_key(reservation_id))
        return None if raw is None else orjson.loads(raw)

    async def forget(self, reservation_id: str) -> None:
        await self.client.delete(self.reservation_key(reservation_id))


def _change(
    sku: str, version: Any, held: Any, channels: Any, fragments: Sequence[Any]
) -> ServedChange | None:
    if not int(version):
        return None
    locations = locations_from_flat(channels, fragments)
    served = with_held(SkuAvailability(sku, tuple(locations), None), decode_held(held))
    return ServedChange(sku, int(version), served)


def _pairs(reply: Any) -> dict[Any, Any]:
    """HGETALL's reply as a dict (RESP2 gives a flat list through a bare command)."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
