-- The launcher takes the next job when a machine slot is free.
-- ARGV: prefix, max_in_flight, owner, lease_ms, token.
-- Jobs whose run time has come move from `scheduled` to `queued` first.
local due = redis.call('ZRANGEBYSCORE', P .. 'scheduled', '-inf', int(NOW), 'LIMIT', 0, 100)
for _, id in ipairs(due) do
  redis.call('ZREM', P .. 'scheduled', id)
  local key = job_key(id)
  redis.call('HDEL', key, 'run_at')
  push_queue(id, key, 'scheduled')
end

-- Slots are counted across every dispatcher: a slot is held from the
-- claim until the attempt's machine is destroyed.
if redis.call('ZCARD', P .. 'in_flight') >= tonumber(ARGV[2]) then
  return cjson.encode({ full = true })
end
local popped = redis.call('ZPOPMIN', P .. 'queue')
if #popped == 0 then
  local next = redis.call('ZRANGE', P .. 'scheduled', 0, 0, 'WITHSCORES')
  local wait = nil
  if next[2] then wait = math.max(0, tonumber(next[2]) - NOW) end
  return cjson.encode({ empty = true, next_due_in_ms = wait })
end

local id = popped[1]
local key = job_key(id)
local n = tostring(tonumber(hget(key, 'attempt')) + 1)
local a = 'a:' .. n .. ':'
redis.call('HSET', key, 'attempt', n, 'token', ARGV[5], a .. 'claimed_at', int(NOW), a .. 'owner', ARGV[3])
redis.call('HDEL', key, 'progress', 'progress_message')
redis.call('ZADD', P .. 'in_flight', int(NOW + tonumber(ARGV[4])), id .. '/' .. n)
set_status(id, key, 'queued', 'starting')
return cjson.encode({ claimed = hgetall(key) })
