-- The runner is alive. Returns -1 when the attempt is no longer current,
-- 1 when a cancel was requested, 0 otherwise.
-- ARGV: prefix, id, attempt, token.
local id, attempt, token = ARGV[2], ARGV[3], ARGV[4]
local key = job_key(id)
if not is_current(key, attempt, token) then return -1 end
redis.call('HSET', key, 'a:' .. attempt .. ':heartbeat_at', int(NOW))
if hget(key, 'cancel_requested') then return 1 end
return 0
