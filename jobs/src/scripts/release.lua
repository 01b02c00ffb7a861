-- The attempt's machine is destroyed: its slot is free for any dispatcher.
-- Only its owner may free it. Answers 1 when freed, 0 when already free,
-- -1 when another dispatcher owns the attempt now.
-- ARGV: prefix, id, attempt, epoch.
local id, attempt, epoch = ARGV[2], ARGV[3], ARGV[4]
local member = member_of(id, attempt)
if redis.call('ZSCORE', P .. 'in_flight', member) and not owns(member, epoch) then
  return -1
end
local removed = redis.call('ZREM', P .. 'in_flight', member)
redis.call('HDEL', P .. 'in_flight_epoch', member)
local kind = redis.call('HGET', P .. 'in_flight_kind', member)
if kind then
  redis.call('HDEL', P .. 'in_flight_kind', member)
  if redis.call('HINCRBY', P .. 'in_flight_kinds', kind, -1) <= 0 then
    redis.call('HDEL', P .. 'in_flight_kinds', kind)
  end
end
fq_released(member)
if removed == 1 then publish({ id = id, type = 'slot' }) end
return removed
