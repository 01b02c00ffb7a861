-- Give a failed or cancelled job a fresh set of attempts. Its history of
-- attempts stays. Returns 'queued', 'not_finished', 'missing', or
-- 'secrets_gone' when the job had secrets: they were deleted when it
-- finished, and a run without them would fail in a confusing way.
-- ARGV: prefix, id.
local id = ARGV[2]
local key = job_key(id)
local status = hget(key, 'status')
if not status then return 'missing' end
if status ~= 'failed' and status ~= 'cancelled' then return 'not_finished' end
if hget(key, 'has_secrets') then return 'secrets_gone' end
redis.call('HSET', key, 'attempt_base', hget(key, 'attempt'))
redis.call('HDEL', key, 'error', 'result', 'finished_at', 'cancel_requested')
redis.call('ZREM', P .. 'finished', id)
push_queue(id, key, status)
return 'queued'
