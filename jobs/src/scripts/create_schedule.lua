-- Stores a new schedule, unless the store already holds `max` of them
-- (checked and written in one step, so concurrent creates cannot pass it).
-- ARGV: prefix, id, definition (JSON), first_ms (its first tick), max.
-- Returns 1 when stored, 0 when the store is full.
local id, definition, first_ms, max = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('HLEN', P .. 'schedules') >= tonumber(max) then return 0 end
redis.call('HSET', P .. 'schedules', id, definition)
redis.call('ZADD', P .. 'schedules_due', first_ms, id)
return 1
