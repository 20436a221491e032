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
# and expired holds), `touched` (location -> true: where those holds were), `where`
# (reservation id -> location of each hold, live or gone) and `lapsed`: whether
# some hold stopped counting since the record's version was last bumped, expired
# here or gone with the holds key itself, which expires at its latest deadline (the
# record's 'h' then lies in the past).
# DROP_GONE removes `gone` from the holds. It is each script's last command on the
# holds: it may empty them (the key goes), and on a Redis Cluster master whose slot
# is migrating away a script that touches a key gone meanwhile is stopped halfway
# ("non local key").
LIVE_HOLDS_LUA = """
local held = {}
local live = {}
local gone = {}
local touched = {}
local where = {}
local dropped = 0
local expired = 0
local latest = 0
local all_holds = redis.call('HGETALL', KEYS[2])
for i = 1, #all_holds, 2 do
  local loc, qty, deadline = string.match(all_holds[i + 1], '^(%S+) (%d+) (%d+)$')
  deadline = tonumber(deadline)
  where[all_holds[i]] = loc
  if drop[all_holds[i]] then
    gone[#gone + 1] = all_holds[i]
    touched[loc] = true
    dropped = dropped + 1
  elseif deadline <= now then
    gone[#gone + 1] = all_holds[i]
    touched[loc] = true
    expired = expired + 1
  else
    held[loc] = (held[loc] or 0) + tonumber(qty)
    live[all_holds[i]] = deadline
    if deadline > latest then latest = deadline end
  end
end
local noted_until = redis.call('HGET', KEYS[1], 'h')
local lapsed = expired > 0 or (noted_until ~= false and tonumber(noted_until) <= now)
if lapsed and noted_until ~= false and tonumber(noted_until) <= now then
  -- The holds key may have expired on its own: where the holds were is noted in 'hl'.
  local noted_at = redis.call('HGET', KEYS[1], 'hl')
  if noted_at then
    for loc in string.gmatch(noted_at, '%S+') do touched[loc] = true end
  end
end
"""
DROP_GONE_LUA = """
for i = 1, #gone, 1000 do
  redis.call('HDEL', KEYS[2], unpack(gone, i, math.min(i + 999, #gone)))
end
"""
# HELD_JSON sets `held_json`: `held` as a JSON object, '' when there is no live hold,
# and notes in the record's 'h' the latest deadline (absent when none), which tells
# reads whether to count holds at all, and in 'hl' the locations of the live holds
# (space-separated), which tells LIVE_HOLDS where the holds were once the holds key
# has expired on its own (the change feed republishes those locations).
HELD_JSON_LUA = """
local held_json = ''
if next(held) ~= nil then held_json = cjson.encode(held) end
if latest > 0 then
  local held_at = {}
  for loc in pairs(held) do held_at[#held_at + 1] = loc end
  redis.call('HSET', KEYS[1], 'h', string.format('%d', latest), 'hl', table.concat(held_at, ' '))
else
  redis.call('HDEL', KEYS[1], 'h', 'hl')
end
"""
# ANNOUNCE bumps the record's version after a change of its holds alone and
# announces it on the SKU's channel (`channel`): `<v> + []` (no location's folded
# figures changed), followed by ` <held_json>` while some hold lives (README
# "Serving layer").
ANNOUNCE_LUA = """
local v = redis.call('HINCRBY', KEYS[1], 'v', 1)
local version = string.format('%d', v)
local message = version .. ' + []'
if held_json ~= '' then message = message .. ' ' .. held_json end
redis.call('SPUBLISH', channel, message)
"""
# FRAGMENTS defines fragments_of(wanted): the record's `c` and, flat, for each location
# of `wanted` (location -> true) the record has: the location, its `a:` fragment and
# its `b:<ch>:` fragment for each channel of `c` in order ('' where it has none)
# (``infra.records.locations_from_flat``). O(len(wanted)), whatever the SKU's
# location count.
FRAGMENTS_LUA = """
local function fragments_of(wanted)
  local c = redis.call('HGET', KEYS[1], 'c') or ''
  local chans = {}
  for ch in string.gmatch(c, '%S+') do chans[#chans + 1] = ch end
  local out = {}
  for loc in pairs(wanted) do
    local fields = {'a:' .. loc}
    for _, ch in ipairs(chans) do fields[#fields + 1] = 'b:' .. ch .. ':' .. loc end
    local got = redis.call('HMGET', KEYS[1], unpack(fields))
    if got[1] then
      out[#out + 1] = loc
      for x = 1, #fields do out[#out + 1] = got[x] or '' end
    end
  end
  return c, out
end
"""

# Writes a record only when what it serves changed, bumps its version and announces
# the change on the SKU's sharded channel, all in one step, so a watcher never sees a
# change that the record does not hold, nor the other way round.
# The record keeps one field per location (``infra.records``): `a:<loc>` the
# location's answer object for a channel without a buffer, `b:<ch>:<loc>` the same for
# a channel it has a buffer for, `t:*` / `t:<ch>` the SKU's totals, `c` its buffered
# channels. A write is either *whole* (`=`: every location, the totals and `c`; every
# other field but v, f and h removed) or *partial* (`+`: only the locations given;
# the totals move by the difference of their ATS, read from the fragments stored, so
# a change at one of N locations costs O(1) in N). A partial write onto no record, or
# naming a channel the record's `c` lacks, writes nothing and answers -1: the writer
# then writes the SKU whole.
# What a record serves is its folded figures with the SKU's live reservation holds
# counted as reserved; the version counts changes of either, whoever makes them (this
# script, or the reservation API placing or removing a hold:
# ``infra.reservation_store``), so one version always means one served view.
# A record's first version is the writer's clock in microseconds (ARGV[2]) rather
# than 1: a record rebuilt after Redis lost its data then starts above every
# version it had before, and consumers that skip versions they have seen lose
# nothing. Versions are formatted with %d: Lua would print them as 1.79e+15.
# In the same step it hands reservation holds over to the record: the holds of the
# reservation ids ARGV[4..3+ARGV[3]] (lines whose events the written figures include)
# are removed from the SKU's holds (KEYS[2]), so that a hold stops counting exactly
# when the figures start to. Holds past their deadline (never handed over) are
# purged on the way.
# A changed record is rewritten in place (fields set, those it no longer has
# removed), never deleted and written again: on a Redis Cluster master whose slot is
# migrating away, a script that touches a key it deleted is stopped halfway ("non
# local key"), with the deletion done.
# Reads keep a joined answer per channel (`j:<channel>`, `j:*`) with the version it
# was joined at (`jv:...`): a whole write leaves them to their version check when
# nothing changed and drops them when something did.
# ARGV: change channel, clock µs, n, n reservation ids, then ``RecordWrite.args``:
#   whole:   '=', c, t, (total field, total) * t, l, location * l
#   partial: '+', l, location * l
#   location: loc, data (JSON, '' when removed), a: fragment, k, (channel, b: fragment) * k
# Returns {the version the change feed must carry (0 none; a whole write also answers
# an earlier version the feed never acknowledged), how many holds were handed over,
# how many expired holds were purged, the live holds per location as JSON ('' for
# none), the locations of the holds handed over or purged (space-separated: their
# served figures changed too)}, or {-1, 0, 0, ''} for a partial write that needs a
# whole one.
WRITE_RECORD = (
    """
local n = tonumber(ARGV[3])
local channel = ARGV[1]
local start = 4 + n
local whole = ARGV[start] == '='
local cur = redis.call('HMGET', KEYS[1], 'v', 'f', 'c')
local chans = {}
local known = {}
local nl
local j
if whole then
  nl = tonumber(ARGV[start + 3 + 2 * tonumber(ARGV[start + 2])])
else
  if not cur[3] then return {-1, 0, 0, ''} end
  for ch in string.gmatch(cur[3], '%S+') do
    chans[#chans + 1] = ch
    known[ch] = true
  end
  nl = tonumber(ARGV[start + 1])
  j = start + 2
  for l = 1, nl do
    local k = tonumber(ARGV[j + 3])
    j = j + 4
    for b = 1, k do
      if not known[ARGV[j]] then return {-1, 0, 0, ''} end
      j = j + 2
    end
  end
end
local drop = {}
for i = 4, 3 + n do drop[ARGV[i]] = true end
local now = math.floor(tonumber(ARGV[2]) / 1000)
"""
    + LIVE_HOLDS_LUA
    + DROP_GONE_LUA
    + HELD_JSON_LUA
    + """
local sets = {}
local dels = {}
local datas = {}
local totals = {}
local changed = false
local function ats_of(fragment)
  if not fragment then return 0 end
  return tonumber(string.match(fragment, '"ats":(%d+)}$'))
end
if whole then
  local stored = {}
  local all = redis.call('HGETALL', KEYS[1])
  for x = 1, #all, 2 do stored[all[x]] = all[x + 1] end
  local keep = {v = true, f = true, h = true, hl = true}
  local function put(field, value)
    keep[field] = true
    if stored[field] ~= value then
      changed = true
      sets[#sets + 1] = field
      sets[#sets + 1] = value
    end
  end
  put('c', ARGV[start + 1])
  j = start + 3
  for t = 1, tonumber(ARGV[start + 2]) do
    put(ARGV[j], ARGV[j + 1])
    j = j + 2
  end
  j = j + 1
  for l = 1, nl do
    local loc = ARGV[j]
    datas[#datas + 1] = ARGV[j + 1]
    put('a:' .. loc, ARGV[j + 2])
    local k = tonumber(ARGV[j + 3])
    j = j + 4
    for b = 1, k do
      put('b:' .. ARGV[j] .. ':' .. loc, ARGV[j + 1])
      j = j + 2
    end
  end
  local answers = {}
  for field in pairs(stored) do
    if not keep[field] then
      if string.sub(field, 1, 1) == 'j' then
        answers[#answers + 1] = field  -- a joined answer kept by reads: not a change
      else
        changed = true
        dels[#dels + 1] = field
      end
    end
  end
  if changed then
    for _, field in ipairs(answers) do dels[#dels + 1] = field end
  end
else
  totals['*'] = 0
  for _, ch in ipairs(chans) do totals[ch] = 0 end
  j = start + 2
  for l = 1, nl do
    local loc = ARGV[j]
    local data = ARGV[j + 1]
    local fields = {'a:' .. loc}
    for _, ch in ipairs(chans) do fields[#fields + 1] = 'b:' .. ch .. ':' .. loc end
    local old = redis.call('HMGET', KEYS[1], unpack(fields))
    local new = {}
    if data ~= '' then new[fields[1]] = ARGV[j + 2] end
    local k = tonumber(ARGV[j + 3])
    j = j + 4
    for b = 1, k do
      new['b:' .. ARGV[j] .. ':' .. loc] = ARGV[j + 1]
      j = j + 2
    end
    local differs = false
    for x, field in ipairs(fields) do
      if old[x] ~= (new[field] or false) then differs = true end
    end
    if differs then
      changed = true
      if data ~= '' then datas[#datas + 1] = data else datas[#datas + 1] = '["' .. loc .. '"]' end
      totals['*'] = totals['*'] + ats_of(new[fields[1]]) - ats_of(old[1])
      for x, ch in ipairs(chans) do
        local now_fragment = new[fields[x + 1]] or new[fields[1]]
        local was_fragment = old[x + 1] or old[1]
        totals[ch] = totals[ch] + ats_of(now_fragment) - ats_of(was_fragment)
      end
      for x, field in ipairs(fields) do
        if new[field] then
          sets[#sets + 1] = field
          sets[#sets + 1] = new[field]
        elseif old[x] then
          dels[#dels + 1] = field
        end
      end
    end
  end
end
local handed = dropped
local v = tonumber(cur[1] or '0')
local f = tonumber(cur[2] or '0')
if not changed and handed == 0 and not lapsed then
  if whole and f < v then return {v, handed, expired, held_json} end
  return {0, handed, expired, held_json}
end
if v == 0 then v = tonumber(ARGV[2]) else v = v + 1 end
local version = string.format('%d', v)
sets[#sets + 1] = 'v'
sets[#sets + 1] = version
for i = 1, #sets, 1000 do
  redis.call('HSET', KEYS[1], unpack(sets, i, math.min(i + 999, #sets)))
end
for i = 1, #dels, 1000 do
  redis.call('HDEL', KEYS[1], unpack(dels, i, math.min(i + 999, #dels)))
end
for ch, delta in pairs(totals) do
  if delta ~= 0 then redis.call('HINCRBY', KEYS[1], 't:' .. ch, delta) end
end
local kind = '+'
if whole then kind = '=' end
local message = version .. ' ' .. kind .. ' [' .. table.concat(datas, ',') .. ']'
if held_json ~= '' then message = message .. ' ' .. held_json end
redis.call('SPUBLISH', channel, message)
local touched_list = {}
for loc in pairs(touched) do touched_list[#touched_list + 1] = loc end
return {v, handed, expired, held_json, table.concat(touched_list, ' ')}
"""
)

# Reads what a record serves, atomically: {version, its fields (HGETALL), live holds
# per location as JSON ('' for none)}; {0} when there is no record. Purges nothing (a
# read). KEYS: the SKU's record, its holds. ARGV: now (ms).
READ_SERVED = """
local all = redis.call('HGETALL', KEYS[1])
local version = false
local exists = false
for i = 1, #all, 2 do
  if all[i] == 'v' then version = all[i + 1] elseif all[i] == 'c' then exists = true end
end
if not exists or not version then return {0} end
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
return {version, all, held_json}
"""

# Keeps a read's joined answer (ARGV[3]) in field ARGV[2], with the version it was
# joined at (ARGV[1]) in ARGV[4], if the record is still at that version: the next
# read of that channel is then one HMGET (``infra.serving_reads``).
KEEP_ANSWER = """
if redis.call('HGET', KEYS[1], 'v') == ARGV[1] then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3], ARGV[4], ARGV[1])
end
return 0
"""
