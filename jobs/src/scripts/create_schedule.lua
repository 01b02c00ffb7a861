-- Stores a new schedule, unless the store already holds `max` of them
-- (checked and written in one step, so concurrent creates cannot pass it).
-- ARGV: prefix, id, definition (JSON), first_ms (its first tick), max.
-- Returns 1 when stored, 0 when the store is full.
if redis.call('HLEN', P .. 'schedules') >= tonumber(ARGV[5]) then return 0 end
redis.call('HSET', P .. 'schedules', ARGV[2], ARGV[3])
redis.call('ZADD', P .. 'schedules_due', ARGV[4], ARGV[2])
return 1
