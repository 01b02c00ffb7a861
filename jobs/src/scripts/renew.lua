-- The supervisor extends its lease on an in-flight attempt and learns how
-- long ago the runner last showed signs of life (heartbeat, or the claim
-- before the runner started). Returns -1 when the slot is gone (released,
-- or taken over by another dispatcher), else that age in milliseconds.
-- ARGV: prefix, id, attempt, lease_ms.
local member = ARGV[2] .. '/' .. ARGV[3]
if not redis.call('ZSCORE', P .. 'in_flight', member) then return -1 end
redis.call('ZADD', P .. 'in_flight', int(NOW + tonumber(ARGV[4])), member)
local a = 'a:' .. ARGV[3] .. ':'
local key = job_key(ARGV[2])
local alive = hget(key, a .. 'heartbeat_at') or hget(key, a .. 'claimed_at') or int(NOW)
return NOW - tonumber(alive)
