-- The runner reports progress: a percentage and an optional message.
-- Returns 0 when the attempt is no longer current.
-- ARGV: prefix, id, attempt, token, percent, message.
local id, attempt, token, percent, message = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local key = job_key(id)
if not is_current(key, attempt, token) or hget(key, 'status') ~= 'running' then
  return 0
end
redis.call('HSET', key, 'progress', percent, 'progress_message', message, 'updated_at', int(NOW))
publish({ id = id, type = 'progress', attempt = tonumber(attempt) })
return 1
