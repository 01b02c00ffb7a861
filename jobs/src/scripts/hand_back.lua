-- A dispatcher shutting down hands an attempt back: its lease expires now,
-- and every dispatcher is told so a peer's reaper takes it over at once.
-- ARGV: prefix, id, attempt.
local member = ARGV[2] .. '/' .. ARGV[3]
if not redis.call('ZSCORE', P .. 'in_flight', member) then return 0 end
redis.call('ZADD', P .. 'in_flight', '0', member)
publish({ id = ARGV[2], type = 'lease', attempt = tonumber(ARGV[3]) })
return 1
