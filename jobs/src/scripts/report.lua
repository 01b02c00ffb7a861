-- The runner reports what the handler returned, once per attempt. The job's
-- status is the supervisor's to change; this only records and announces.
-- ARGV: prefix, id, attempt, token, 'result'|'error', payload, permanent.
local id, attempt, token, kind, payload, permanent = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local key = job_key(id)
if not is_current(key, attempt, token) or hget(key, 'status') ~= 'running' then
  return 0
end
local a = 'a:' .. attempt .. ':'
if redis.call('HSETNX', key, a .. 'report', kind) == 0 then return 0 end
if kind == 'result' then
  redis.call('HSET', key, a .. 'result', payload)
else
  redis.call('HSET', key, a .. 'error', payload, a .. 'permanent', permanent)
end
publish({ id = id, type = 'report', attempt = tonumber(attempt) })
return 1
