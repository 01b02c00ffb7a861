-- The runner is alive. Returns -1 when the attempt is no longer current,
-- 1 when a cancel was requested, 0 otherwise.
-- ARGV: prefix, id, attempt, token.
local key = job_key(ARGV[2])
if not is_current(key, ARGV[3], ARGV[4]) then return -1 end
redis.call('HSET', key, 'a:' .. ARGV[3] .. ':heartbeat_at', int(NOW))
if hget(key, 'cancel_requested') then return 1 end
return 0
