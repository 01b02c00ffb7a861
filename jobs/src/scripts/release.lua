-- The attempt's machine is destroyed: its slot is free for any dispatcher.
-- ARGV: prefix, id, attempt.
local member = ARGV[2] .. '/' .. ARGV[3]
local removed = redis.call('ZREM', P .. 'in_flight', member)
local kind = redis.call('HGET', P .. 'in_flight_kind', member)
if kind then
  redis.call('HDEL', P .. 'in_flight_kind', member)
  if redis.call('HINCRBY', P .. 'in_flight_kinds', kind, -1) <= 0 then
    redis.call('HDEL', P .. 'in_flight_kinds', kind)
  end
end
if removed == 1 then publish({ id = ARGV[2], type = 'slot' }) end
return removed
