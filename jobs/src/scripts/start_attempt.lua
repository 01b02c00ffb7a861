-- The runner claims its attempt: starting -> running. Returns the job, or
-- nil when the attempt is no longer current (timed out, ...) or its job's
-- cancel was requested before it began: then the handler never runs.
-- ARGV: prefix, id, attempt, token.
local id, attempt, token = ARGV[2], ARGV[3], ARGV[4]
local key = job_key(id)
if not is_current(key, attempt, token) or hget(key, 'status') ~= 'starting'
  or hget(key, 'cancel_requested') then
  return nil
end
local a = 'a:' .. attempt .. ':'
redis.call('HSET', key, a .. 'started_at', int(NOW), a .. 'heartbeat_at', int(NOW))
set_status(id, key, 'starting', 'running')
return cjson.encode(hgetall(key))
