-- Cancel a job. Waiting jobs end at once; jobs on a machine get
-- `cancel_requested` and their supervisor stops the machine.
-- Returns 'cancelled', 'cancelling', 'finished' or 'missing'.
-- ARGV: prefix, id.
local id = ARGV[2]
local key = job_key(id)
local status = hget(key, 'status')
if not status then return 'missing' end
if status == 'queued' or status == 'scheduled' or status == 'waiting' then
  cancel_waiting(id, key, status, 'cancelled before it ran')
  return 'cancelled'
end
if status == 'starting' or status == 'running' then
  redis.call('HSET', key, 'cancel_requested', '1')
  publish({ id = id, type = 'cancel', attempt = tonumber(hget(key, 'attempt')) })
  return 'cancelling'
end
return 'finished'
