-- A new job. ARGV: prefix, id, kind, params, priority, max_attempts,
-- timeout_secs, backoff, machine, delay_ms, callback_url ('' none),
-- idempotency_key ('' none), request_hash, idempotency_ttl_ms,
-- secrets (JSON object, '' none: stored apart, see secrets.lua),
-- run_options (JSON, jobs::RunOptions: tags, expiry, OOM ladder, parent;
-- applied by run_options.lua).
-- Returns {job = ...}, or {existing = id} when the idempotency key was
-- used for the same request, or {conflict = id} when for another one.
local id = ARGV[2]
local key = job_key(id)
if ARGV[12] ~= '' then
  local idem = P .. 'idempotency:' .. ARGV[12]
  local seen = redis.call('GET', idem)
  if seen then
    local first, hash = string.match(seen, '^([^ ]+) (.*)$')
    if hash == ARGV[13] then return cjson.encode({ existing = first }) end
    return cjson.encode({ conflict = first })
  end
  redis.call('SET', idem, id .. ' ' .. ARGV[13], 'PX', ARGV[14])
end
if redis.call('EXISTS', key) == 1 then
  return redis.error_reply('EXISTS job ' .. id)
end
redis.call('HSET', key, 'id', id, 'kind', ARGV[3], 'params', ARGV[4],
  'priority', ARGV[5], 'max_attempts', ARGV[6], 'timeout_secs', ARGV[7],
  'backoff', ARGV[8], 'machine', ARGV[9], 'created_at', int(NOW),
  'updated_at', int(NOW), 'attempt', '0', 'attempt_base', '0')
if ARGV[11] ~= '' then redis.call('HSET', key, 'callback_url', ARGV[11]) end
if ARGV[12] ~= '' then redis.call('HSET', key, 'idempotency_key', ARGV[12]) end
if ARGV[15] ~= '' then
  redis.call('SET', P .. 'secrets:' .. id, ARGV[15])
  redis.call('HSET', key, 'has_secrets', '1')
end
apply_run_options(id, key, cjson.decode(ARGV[16]))
redis.call('ZADD', P .. 'jobs', 0, id)
redis.call('ZADD', P .. 'kind:' .. ARGV[3], 0, id)
local delay = tonumber(ARGV[10])
if delay > 0 then
  schedule(id, key, nil, NOW + delay)
else
  push_queue(id, key, nil)
end
return cjson.encode({ job = hgetall(key) })
