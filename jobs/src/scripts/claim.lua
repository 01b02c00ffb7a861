-- The launcher takes the next job when a machine slot is free.
-- ARGV: prefix, max_in_flight, owner, lease_ms, token, kind caps (JSON
-- object kind -> max machines of that kind, '{}' for none).
-- Jobs whose run time has come move from `scheduled` to `queued` first,
-- once those past their expire_at ended `expired` (run_options.lua).
expire_due(1000)
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
-- The first queued job whose kind is under its cap (kinds without a cap
-- always are). Only the head of the queue is scanned, so a long run of
-- capped kinds can delay others by at most that much.
local caps = cjson.decode(ARGV[6])
local per_kind = P .. 'in_flight_kinds'
local candidates = redis.call('ZRANGE', P .. 'queue', 0, next(caps) and 199 or 0)
local chosen = nil
for _, candidate in ipairs(candidates) do
  local kind = hget(job_key(candidate), 'kind')
  local cap = caps[kind]
  if not cap or tonumber(redis.call('HGET', per_kind, kind) or '0') < cap then
    chosen = candidate
    break
  end
end
if not chosen then
  local soonest = redis.call('ZRANGE', P .. 'scheduled', 0, 0, 'WITHSCORES')
  local wait = nil
  if soonest[2] then wait = math.max(0, tonumber(soonest[2]) - NOW) end
  return cjson.encode({ empty = true, next_due_in_ms = wait })
end
redis.call('ZREM', P .. 'queue', chosen)
started(chosen)
local id = chosen
local key = job_key(id)
local n = tostring(tonumber(hget(key, 'attempt')) + 1)
local a = 'a:' .. n .. ':'
redis.call('HSET', key, 'attempt', n, 'token', ARGV[5], a .. 'claimed_at', int(NOW), a .. 'owner', ARGV[3])
redis.call('HDEL', key, 'progress', 'progress_message')
local member = member_of(id, n)
redis.call('ZADD', P .. 'in_flight', int(NOW + tonumber(ARGV[4])), member)
local epoch = new_epoch(member)
local kind = hget(key, 'kind')
redis.call('HSET', P .. 'in_flight_kind', member, kind)
redis.call('HINCRBY', per_kind, kind, 1)
set_status(id, key, 'queued', 'starting')
count_minute('started')
return cjson.encode({ claimed = hgetall(key), epoch = epoch })
