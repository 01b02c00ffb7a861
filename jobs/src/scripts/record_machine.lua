-- The supervisor records the machine it created (or adopted) for an
-- attempt. Answers 'lost' when the caller no longer owns the attempt,
-- 'stale' when the attempt is no longer current, 'cancel' when it was
-- recorded but the job's cancel was requested, else 'recorded'.
-- ARGV: prefix, id, attempt, token, epoch, machine_id, region ('' keeps the known one).
local id, attempt, token, epoch = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local machine_id, region = ARGV[6], ARGV[7]
if not owns(member_of(id, attempt), epoch) then return 'lost' end
local key = job_key(id)
if not is_current(key, attempt, token) then return 'stale' end
local a = 'a:' .. attempt .. ':'
redis.call('HSET', key, a .. 'machine_id', machine_id)
if region ~= '' then redis.call('HSET', key, a .. 'region', region) end
if hget(key, 'cancel_requested') then return 'cancel' end
return 'recorded'
