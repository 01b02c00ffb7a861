-- The launcher takes the next job when a machine slot is free.
-- ARGV: prefix, max_in_flight, owner, lease_ms, token, kind caps (JSON
-- object kind -> max machines of that kind, '{}' for none).
local max_in_flight, owner, lease_ms, token, kind_caps = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
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
sample_minute()

-- Slots are counted across every dispatcher: a slot is held from the
-- claim until the attempt's machine is destroyed.
if redis.call('ZCARD', P .. 'in_flight') >= tonumber(max_in_flight) then
  return cjson.encode({ full = true })
end
-- The next job by flow control (flow.lua): round-robin across
-- concurrency keys with work, priority within a key, within every cap,
-- limit, rate limit and pause.
fq_adopt_legacy()
fq_wake_keys()
local caps = cjson.decode(kind_caps)
local pick = fq_pick(caps)
if not pick.id then
  local wait = pick.wait
  local soonest = redis.call('ZRANGE', P .. 'scheduled', 0, 0, 'WITHSCORES')
  if soonest[2] then
    local due = math.max(0, tonumber(soonest[2]) - NOW)
    if not wait or due < wait then wait = due end
  end
  return cjson.encode({ empty = true, next_due_in_ms = wait })
end
redis.call('ZREM', P .. 'queue', pick.id)
local id, fkey = pick.id, pick.fkey
started(pick.id)
local key = job_key(id)
local n = tostring(tonumber(hget(key, 'attempt')) + 1)
local a = 'a:' .. n .. ':'
redis.call('HSET', key, 'attempt', n, 'token', token, a .. 'claimed_at', int(NOW), a .. 'owner', owner)
redis.call('HDEL', key, 'progress', 'progress_message')
local member = member_of(id, n)
redis.call('ZADD', P .. 'in_flight', int(NOW + tonumber(lease_ms)), member)
local epoch = new_epoch(member)
local kind = hget(key, 'kind')
redis.call('HSET', P .. 'in_flight_kind', member, kind)
redis.call('HINCRBY', P .. 'in_flight_kinds', kind, 1)
fq_claimed(id, key, fkey, member)
set_status(id, key, 'queued', 'starting')
count_minute('started')
count_queue_wait(key)
return cjson.encode({ claimed = hgetall(key), epoch = epoch })
