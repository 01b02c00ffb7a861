-- A new job. ARGV: prefix, id, kind, params, priority, max_attempts,
-- timeout_secs, backoff, machine, delay_ms.
local id = ARGV[2]
local key = job_key(id)
if redis.call('EXISTS', key) == 1 then
  return redis.error_reply('EXISTS job ' .. id)
end
redis.call('HSET', key, 'id', id, 'kind', ARGV[3], 'params', ARGV[4],
  'priority', ARGV[5], 'max_attempts', ARGV[6], 'timeout_secs', ARGV[7],
  'backoff', ARGV[8], 'machine', ARGV[9], 'created_at', int(NOW),
  'updated_at', int(NOW), 'attempt', '0', 'attempt_base', '0')
redis.call('ZADD', P .. 'jobs', int(NOW), id)
local delay = tonumber(ARGV[10])
if delay > 0 then
  schedule(id, key, nil, NOW + delay)
else
  push_queue(id, key, nil)
end
return cjson.encode(hgetall(key))
