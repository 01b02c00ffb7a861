-- Give a failed, cancelled or expired job a fresh set of attempts. Its
-- history of attempts stays. Returns 'queued', 'not_finished', 'missing',
-- or 'secrets_gone' when the job had secrets: they were deleted when it
-- finished, and a run without them would fail in a confusing way.
-- ARGV: prefix, id, overrides (JSON, validated by the caller: `machine`,
-- the whole new machine spec, and `timeout_secs`, each optional).
local id = ARGV[2]
local overrides = cjson.decode(ARGV[3])
local key = job_key(id)
local status = hget(key, 'status')
if not status then return 'missing' end
if status ~= 'failed' and status ~= 'cancelled' and status ~= 'expired' then return 'not_finished' end
if hget(key, 'has_secrets') then return 'secrets_gone' end
if overrides.machine then redis.call('HSET', key, 'machine', cjson.encode(overrides.machine)) end
if overrides.timeout_secs then redis.call('HSET', key, 'timeout_secs', int(overrides.timeout_secs)) end
redis.call('HSET', key, 'attempt_base', hget(key, 'attempt'))
redis.call('HDEL', key, 'error', 'result', 'finished_at', 'cancel_requested', 'expire_at')
redis.call('ZREM', P .. 'finished', id)
push_queue(id, key, status)
return 'queued'
