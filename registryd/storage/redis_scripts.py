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
