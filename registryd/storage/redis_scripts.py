"""The Lua scripts of the Redis backend, one per multi-key operation (:mod:`.redis`).

A script runs atomically on the server, so each check-and-write below is one round trip that no
other client interleaves with. In a Redis Cluster every key a script names must hash to one slot:
the callers pass keys sharing one hash tag (``{nodes}``, ``{directory}``, ``{spent}``, or one
handle's ``{blind-hex}``). A storage hook added later (compare-and-replace, delete, tombstones)
adds its script here and a method calling it in :mod:`.redis`.
"""

from __future__ import annotations

INSERT_MANY = """
-- KEYS: identity keys; ARGV: sealed values, in the same order. Returns how many were stored.
local added = 0
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[i], 'NX') then added = added + 1 end
end
return added
"""

ADD_NODES = """
-- KEYS[1]: the node list, KEYS[2]: the set of its URLs; ARGV[1]: the most kept, ARGV[2..]: URLs.
local room = tonumber(ARGV[1])
local added = 0
for i = 2, #ARGV do
  if redis.call('SCARD', KEYS[2]) >= room then break end
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[1], ARGV[i])
    added = added + 1
  end
end
return added
"""

_UNLINK = """
local function unlink(host)
  local old = redis.call('HGET', KEYS[1], host)
  if not old then return 0 end
  local key = string.sub(old, 1, 32)
  if redis.call('HGET', KEYS[2], key) == host then redis.call('HDEL', KEYS[2], key) end
  redis.call('HDEL', KEYS[1], host)
  return 1
end
"""

PUT_DNODE = (
    _UNLINK
    + """
-- KEYS[1]: host -> pubkey || record_len_be32 || record || sealed, KEYS[2]: pubkey -> host;
-- ARGV: host, pubkey (32 bytes), value. The key index follows the record (one host per key).
unlink(ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
return 1
"""
)

DELETE_DNODE = (
    _UNLINK
    + """
-- KEYS as PUT_DNODE; ARGV[1]: host. Returns 1 if there was an entry.
return unlink(ARGV[1])
"""
)

SPEND = """
-- KEYS[1]: the spent set (sorted set: nonce id scored by expiry, Unix ms);
-- ARGV: nonce id, expiry, now, the most held. Returns 0 spent, 1 replayed, 2 full.
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
local most = tonumber(ARGV[4])
if redis.call('ZCARD', KEYS[1]) >= most then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
  if redis.call('ZCARD', KEYS[1]) >= most then return 2 end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 0
"""

PUT_PRESENCE = """
-- KEYS[1]: the presence, KEYS[2]: the presence index (sorted set: presence key by expiry);
-- ARGV: value (expiry_be64 || sealed), expiry (Unix ms). The bare upsert (P5), indexed (P17).
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], KEYS[1])
return 1
"""

INDEX_TRIM = 100
"""Expired presence index entries one write drops at most (Redis deletes the values at their
expiry; the index is trimmed as presences are created): ZREMRANGEBYSCORE over all of them would
hold Redis, every client waiting, 0.37 s for 1,000,000 here."""

SWAP = (
    f"local INDEX_TRIM = {INDEX_TRIM}\n"
    + """
-- KEYS[1..3]: one handle's identity, presence and ops keys (one hash tag); KEYS[4], when
-- given: the presence index. ARGV[1]: n swaps, then per swap 6 values: slot (1-3), has
-- expected ('0'/'1'), expected sealed, has new, new sealed, expiry (Unix ms; 0: none), then
-- the expiry as 8 big-endian bytes; last: max presences. Presence and ops values are stored
-- as expiry_be64 || sealed and expire natively. Returns 0 done, 1 stale, 2 full (P16, P17):
-- full when the index holds max presences not yet expired; a new presence drops at most
-- INDEX_TRIM expired index entries, oldest first (their values Redis expired itself).
local function current(slot)
  local v = redis.call('GET', KEYS[slot])
  if not v or slot == 1 then return v end
  return string.sub(v, 9)
end
local swaps, at = {}, 2
for i = 1, tonumber(ARGV[1]) do
  local s = {slot = tonumber(ARGV[at]), has_old = ARGV[at + 1] == '1', old = ARGV[at + 2],
             has_new = ARGV[at + 3] == '1', new = ARGV[at + 4], expiry = tonumber(ARGV[at + 5]),
             expiry_be = ARGV[at + 6]}
  at = at + 7
  local c = current(s.slot)
  if s.has_old then
    if c ~= s.old then return 1 end
  elseif c then
    return 1
  end
  s.changed = s.has_old ~= s.has_new or (s.has_new and s.old ~= s.new)
  swaps[i] = s
end
local indexed = #KEYS >= 4
for _, s in ipairs(swaps) do
  if indexed and s.changed and s.slot == 2 and not s.has_old then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local expired = redis.call('ZCOUNT', KEYS[4], '-inf', now)
    if expired > 0 then  -- a bounded trim: the script must not hold Redis for 1,000,000
      redis.call('ZREMRANGEBYRANK', KEYS[4], 0, math.min(expired, INDEX_TRIM) - 1)
    end
    local live = redis.call('ZCARD', KEYS[4]) - redis.call('ZCOUNT', KEYS[4], '-inf', now)
    if live >= tonumber(ARGV[at]) then return 2 end
  end
end
for _, s in ipairs(swaps) do
  if s.changed then
    local key = KEYS[s.slot]
    if not s.has_new then
      redis.call('DEL', key)
      if indexed and s.slot == 2 then redis.call('ZREM', KEYS[4], key) end
    elseif s.slot == 1 then
      redis.call('SET', key, s.new)
    else
      if s.expiry > 0 then
        redis.call('SET', key, s.expiry_be .. s.new, 'PXAT', s.expiry)
      else
        redis.call('SET', key, s.expiry_be .. s.new)
      end
      if indexed and s.slot == 2 then redis.call('ZADD', KEYS[4], s.expiry, key) end
    end
  end
end
return 0
"""
)
