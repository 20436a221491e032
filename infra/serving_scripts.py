"""The Lua scripts of a SKU's serving record and its reservation holds (``infra.store``,
``infra.reservation_store``, ``infra.hold_checks``): what a record serves, its version
and the announcement of its changes are decided here, each in one atomic step on the
SKU's hash slot."""

from __future__ import annotations

# Lua fragments shared by the scripts that touch a SKU's holds (KEYS[2]; the record is
# KEYS[1]), with `now` (ms) set beforehand, and `drop` (reservation id -> true: holds
# the script removes; may be empty).
# LIVE_HOLDS reads the holds and sets `held` (location -> units of the live holds),
# `live` (reservation id -> deadline of each live hold), `dropped` (how many of
# `drop` were there), `expired` (holds past their deadline, not dropped), `latest`
# (the live holds' latest deadline, 0 when none), `gone` (the fields of the dropped
# and expired holds) and `lapsed`: whether some hold stopped counting since the
# record's version was last bumped, expired here or gone with the holds key itself,
# which expires at its latest deadline (the record's 'h' then lies in the past).
# DROP_GONE removes `gone` from the holds. It is each script's last command on the
# holds: it may empty them (the key goes), and on a Redis Cluster master whose slot
# is migrating away a script that touches a key gone meanwhile is stopped halfway
# ("non local key").
LIVE_HOLDS_LUA = """
local held = {}
local live = {}
local gone = {}
local dropped = 0
local expired = 0
local latest = 0
local all_holds = redis.call('HGETALL', KEYS[2])
for i = 1, #all_holds, 2 do
  local loc, qty, deadline = string.match(all_holds[i + 1], '^(%S+) (%d+) (%d+)$')
  deadline = tonumber(deadline)
  if drop[all_holds[i]] then
    gone[#gone + 1] = all_holds[i]
    dropped = dropped + 1
  elseif deadline <= now then
    gone[#gone + 1] = all_holds[i]
    expired = expired + 1
  else
    held[loc] = (held[loc] or 0) + tonumber(qty)
    live[all_holds[i]] = deadline
    if deadline > latest then latest = deadline end
  end
end
local noted_until = redis.call('HGET', KEYS[1], 'h')
local lapsed = expired > 0 or (noted_until ~= false and tonumber(noted_until) <= now)
"""
DROP_GONE_LUA = """
for i = 1, #gone, 1000 do
  redis.call('HDEL', KEYS[2], unpack(gone, i, math.min(i + 999, #gone)))
end
"""
# HELD_JSON sets `held_json`: `held` as a JSON object, '' when there is no live hold,
# and notes in the record's 'h' the latest deadline (absent when none), which tells
# reads whether to count holds at all.
HELD_JSON_LUA = """
local held_json = ''
if next(held) ~= nil then held_json = cjson.encode(held) end
if latest > 0 then
  redis.call('HSET', KEYS[1], 'h', string.format('%d', latest))
else
  redis.call('HDEL', KEYS[1], 'h')
end
"""
# ANNOUNCE bumps the record's version (`v`) after a change of its holds alone and
# announces the served view on the SKU's channel (`channel`): `<v> <d>`, followed by
# ` <held_json>` while some hold lives (README "Serving layer").
ANNOUNCE_LUA = """
local v = redis.call('HINCRBY', KEYS[1], 'v', 1)
local version = string.format('%d', v)
local d = redis.call('HGET', KEYS[1], 'd')
local message = version .. ' ' .. d
if held_json ~= '' then message = message .. ' ' .. held_json end
redis.call('SPUBLISH', channel, message)
"""

# Writes a record only when what it serves changed, bumps its version and announces
# the change on the SKU's sharded channel, all in one step, so a watcher never sees a
# change that the record does not hold, nor the other way round.
# What a record serves is its folded figures (`d`) with the SKU's live reservation
# holds counted as reserved; the version counts changes of either, whoever makes
# them (this script, or the reservation API placing or removing a hold:
# ``infra.reservation_store``), so one version always means one served view.
# A record's first version is the writer's clock in microseconds (ARGV[3]) rather
# than 1: a record rebuilt after Redis lost its data then starts above every
# version it had before, and consumers that skip versions they have seen lose
# nothing. Versions are formatted with %d: Lua would print them as 1.79e+15.
# In the same step it hands reservation holds over to the record: the holds of the
# reservation ids ARGV[5..4+ARGV[4]] (lines whose events the written figures
# include) are removed from the SKU's holds (KEYS[2]), so that a hold stops counting
# exactly when the figures start to. Holds past their deadline (never handed over)
# are purged on the way.
# A changed record is rewritten in place (its fields set, those it no longer has
# removed), never deleted and written again: on a Redis Cluster master whose slot is
# migrating away, a script that touches a key it deleted is stopped halfway ("non
# local key"), with the deletion done.
# Returns {the version the change feed still has to carry (a change now, or an
# earlier one the feed never acknowledged) else 0, how many holds were handed over,
# how many expired holds were purged, the live holds per location as JSON ('' for
# none): the feed's record carries the served view}.
WRITE_RECORD = (
    """
local n = tonumber(ARGV[4])
local drop = {}
for i = 5, 4 + n do drop[ARGV[i]] = true end
local now = math.floor(tonumber(ARGV[3]) / 1000)
"""
    + LIVE_HOLDS_LUA
    + DROP_GONE_LUA
    + HELD_JSON_LUA
    + """
local handed = dropped
local cur = redis.call('HMGET', KEYS[1], 'd', 'v', 'f')
local v = tonumber(cur[2] or '0')
local f = tonumber(cur[3] or '0')
local same = cur[1] == ARGV[1]
if same and handed == 0 and not lapsed then
  if f < v then return {v, handed, expired, held_json} end
  return {0, handed, expired, held_json}
end
if v == 0 then v = tonumber(ARGV[3]) else v = v + 1 end
local version = string.format('%d', v)
if same then
  redis.call('HSET', KEYS[1], 'v', version)
else
  local keep = {v = true, f = true, d = true, h = true}
  for i = 5 + n, #ARGV, 2 do keep[ARGV[i]] = true end
  local stale = {}
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    if not keep[field] then stale[#stale + 1] = field end
  end
  redis.call('HSET', KEYS[1], 'v', version, 'f', string.format('%d', f), 'd', ARGV[1],
             unpack(ARGV, 5 + n))
  if #stale > 0 then redis.call('HDEL', KEYS[1], unpack(stale)) end
end
local message = version .. ' ' .. ARGV[1]
if held_json ~= '' then message = message .. ' ' .. held_json end
redis.call('SPUBLISH', ARGV[2], message)
return {v, handed, expired, held_json}
"""
)

# Reads what a record serves, atomically: {version, d, live holds per location as
# JSON ('' for none)}; {0} when there is no record. Purges nothing (a read).
# KEYS: the SKU's record, its holds. ARGV: now (ms).
READ_SERVED = """
local cur = redis.call('HMGET', KEYS[1], 'v', 'd')
if not cur[2] then return {0} end
local now = tonumber(ARGV[1])
local held = {}
local any = false
local all_holds = redis.call('HGETALL', KEYS[2])
for i = 1, #all_holds, 2 do
  local loc, qty, deadline = string.match(all_holds[i + 1], '^(%S+) (%d+) (%d+)$')
  if tonumber(deadline) > now then
    held[loc] = (held[loc] or 0) + tonumber(qty)
    any = true
  end
end
local held_json = ''
if any then held_json = cjson.encode(held) end
return {cur[1], cur[2], held_json}
"""
