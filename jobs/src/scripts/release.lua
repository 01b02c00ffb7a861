-- The attempt's machine is destroyed: its slot is free for any dispatcher.
-- ARGV: prefix, id, attempt.
local removed = redis.call('ZREM', P .. 'in_flight', ARGV[2] .. '/' .. ARGV[3])
if removed == 1 then publish({ id = ARGV[2], type = 'slot' }) end
return removed
