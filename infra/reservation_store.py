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
from typing import Any, cast

import orjson

from availability.ats import SkuAvailability
from availability.holds import Hold
from infra.redis_client import RedisClient
from infra.store import AvailabilityStore

# Purges expired holds, then places ARGV[1]'s hold at the first candidate location
# (ARGV[6..]) where it fits: on_hand - reserved - held - safety_stock - buffer(channel)
# >= quantity, with the folded figures of the SKU's record (``d``) and its live holds.
# A hold this reservation already has (a retry after a crash) is replaced, not added.
# KEYS: the SKU's record, its holds. ARGV: reservation id, channel, quantity, now ms,
# deadline ms, candidate locations...
# Returns {1, location, expired} when placed, else {0, best free units, expired}.
_PLACE_HOLD = """
local now = tonumber(ARGV[4])
local held = {}
local expired = 0
local latest = tonumber(ARGV[5])
redis.call('HDEL', KEYS[2], ARGV[1])
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local loc, qty, deadline = string.match(all[i + 1], '^(%S+) (%d+) (%d+)$')
  deadline = tonumber(deadline)
  if deadline <= now then
    redis.call('HDEL', KEYS[2], all[i])
    expired = expired + 1
  else
    held[loc] = (held[loc] or 0) + tonumber(qty)
    if deadline > latest then latest = deadline end
  end
end
local best = 0
local raw = redis.call('HGET', KEYS[1], 'd')
if raw then
  local figures = {}
  for _, l in ipairs(cjson.decode(raw)['locations']) do figures[l[1]] = l end
  local quantity = tonumber(ARGV[3])
  for i = 6, #ARGV do
    local l = figures[ARGV[i]]
    if l then
      local buffer = 0
      if type(l[7]) == 'table' and l[7][ARGV[2]] then buffer = l[7][ARGV[2]] end
      local free = l[2] - l[3] - (held[ARGV[i]] or 0) - l[6] - buffer
      if free >= quantity then
        redis.call('HSET', KEYS[2], ARGV[1], ARGV[i] .. ' ' .. ARGV[3] .. ' ' .. ARGV[5])
        redis.call('PEXPIREAT', KEYS[2], latest)
        redis.call('HSET', KEYS[1], 'h', string.format('%d', latest))
        return {1, ARGV[i], expired}
      end
      if free > best then best = free end
    end
  end
end
return {0, string.format('%d', best), expired}
"""

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


@dataclass(frozen=True, slots=True)
class Placement:
    """The outcome of one hold: placed at ``location_id``, or not (``best_free``: the
    most units a hold could have taken at a candidate)."""

    location_id: str | None
    best_free: int
    expired: int  # expired holds purged on the way


class ReservationStore:
    def __init__(self, store: AvailabilityStore) -> None:
        self.store = store
        self.client: RedisClient = store.client
        self.prefix = store.prefix
        self._place = self.client.register_script(_PLACE_HOLD)
        self._move = self.client.register_script(_MOVE_DEADLINE)
        self._claim = self.client.register_script(_CLAIM)

    def holds_key(self, sku: str) -> str:
        return self.store.holds_key(sku)

    def reservation_key(self, reservation_id: str) -> str:
        return f"{self.prefix}:reservation:{{{reservation_id}}}"

    # --- holds ---

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
        """Hold ``quantity`` units at the first of ``candidates`` where they fit, in one
        atomic step with the check."""
        placed, value, expired = await self._place(
            keys=[self.store.sku_key(sku), self.holds_key(sku)],
            args=[reservation_id, channel, quantity, now, deadline, *candidates],
        )
        if int(placed):
            return Placement(_text(value), quantity, int(expired))
        return Placement(None, int(value), int(expired))

    async def move_deadline(self, sku: str, reservation_id: str, deadline: int) -> bool:
        """Give a hold a new deadline; False when the hold is gone (expired meanwhile)."""
        return bool(
            await self._move(
                keys=[self.store.sku_key(sku), self.holds_key(sku)], args=[reservation_id, deadline]
            )
        )

    async def remove(self, sku: str, reservation_id: str) -> bool:
        return bool(await self.client.hdel(self.holds_key(sku), reservation_id))

    async def figures(self, skus: Sequence[str]) -> list[tuple[SkuAvailability | None, list[Hold]]]:
        """Each SKU's folded figures (None: never seen) and its holds (expired ones
        included: callers filter with their clock), in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for sku in skus:
            pipe.hget(self.store.sku_key(sku), b"d")
            pipe.hgetall(self.holds_key(sku))
        replies = await pipe.execute()
        answers: list[tuple[SkuAvailability | None, list[Hold]]] = []
        for index in range(len(skus)):
            raw = replies[2 * index]
            figures = None if raw is None else SkuAvailability.from_data(orjson.loads(raw))
            holds = [
                Hold.decode(_text(field), value)
                for field, value in cast(dict[bytes, bytes], replies[2 * index + 1]).items()
            ]
            answers.append((figures, holds))
        return answers

    # --- reservation records ---

    async def claim(self, reservation_id: str, record: dict[str, Any], ttl_ms: int) -> Any:
        """Store ``record`` unless the reservation has one: None when stored, else the
        record it has."""
        raw = await self._claim(
            keys=[self.reservation_key(reservation_id)], args=[orjson.dumps(record), ttl_ms]
        )
        return None if raw is None else orjson.loads(raw)

    async def save(self, reservation_id: str, record: dict[str, Any], ttl_ms: int) -> None:
        await self.client.set(self.reservation_key(reservation_id), orjson.dumps(record), px=ttl_ms)

    async def load(self, reservation_id: str) -> Any:
        raw = await self.client.get(self.reservation_key(reservation_id))
        return None if raw is None else orjson.loads(raw)

    async def forget(self, reservation_id: str) -> None:
        await self.client.delete(self.reservation_key(reservation_id))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
