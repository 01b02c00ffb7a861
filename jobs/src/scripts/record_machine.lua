-- The supervisor records the machine it created for an attempt.
-- ARGV: prefix, id, attempt, token, machine_id, region.
local key = job_key(ARGV[2])
if not is_current(key, ARGV[3], ARGV[4]) then return 0 end
local a = 'a:' .. ARGV[3] .. ':'
redis.call('HSET', key, a .. 'machine_id', ARGV[5], a .. 'region', ARGV[6])
return 1
