-- The runner of the current attempt reads its job's secrets: no one else
-- can (no API route reads this key). Returns the secrets' JSON object,
-- '' when the job has none, or nil when the attempt is not current.
-- ARGV: prefix, id, attempt, token.
local id, attempt, token = ARGV[2], ARGV[3], ARGV[4]
if not is_current(job_key(id), attempt, token) then return nil end
return redis.call('GET', secrets_key(id)) or ''
