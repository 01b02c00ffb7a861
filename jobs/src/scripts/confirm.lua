-- A supervisor confirms it still owns its attempt right before a Machines
-- API call with side effects (create, stop), and extends its lease while
-- at it. Answers 'lost' when another dispatcher took the attempt over (or
-- its slot is gone), 'cancel' when the job's cancel was requested (stored
-- state, so an owner that missed the message still honours it), else
-- 'owned'.
-- ARGV: prefix, id, attempt, epoch, lease_ms.
local id, attempt, epoch, lease_ms = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local member = member_of(id, attempt)
if not owns(member, epoch) or not redis.call('ZSCORE', P .. 'in_flight', member) then
  return 'lost'
end
redis.call('ZADD', P .. 'in_flight', int(NOW + lease_ms), member)
if hget(job_key(id), 'cancel_requested') then return 'cancel' end
return 'owned'
