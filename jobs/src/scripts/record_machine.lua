-- The supervisor records the machine it created for an attempt.
-- ARGV: prefix, id, attempt, token, machine_id, region ('' keeps the known one).
local key = job_key(ARGV[2])
if not is_current(key, ARGV[3], ARGV[4]) then return 0 end
local a = 'a:' .. ARGV[3] .. ':'
redis.call('HSET', key, a .. 'machine_id', ARGV[5])
if ARGV[6] ~= '' then redis.call('HSET', key, a .. 'region', ARGV[6]) end
return 1
