-- The runner of the current attempt reads its job's secrets: no one else
-- can (no API route reads this key). Returns the secrets' JSON object,
-- '' when the job has none, or nil when the attempt is not current.
-- ARGV: prefix, id, attempt, token.
local id = ARGV[2]
if not is_current(job_key(id), ARGV[3], ARGV[4]) then return nil end
return redis.call('GET', P .. 'secrets:' .. id) or ''
