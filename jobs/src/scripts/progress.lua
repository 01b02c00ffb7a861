-- The runner reports progress: a percentage and an optional message.
-- Returns 0 when the attempt is no longer current.
-- ARGV: prefix, id, attempt, token, percent, message.
local id = ARGV[2]
local key = job_key(id)
if not is_current(key, ARGV[3], ARGV[4]) or hget(key, 'status') ~= 'running' then
  return 0
end
redis.call('HSET', key, 'progress', ARGV[5], 'progress_message', ARGV[6], 'updated_at', int(NOW))
publish({ id = id, type = 'progress', attempt = tonumber(ARGV[3]) })
return 1
