-- The runner reports what the handler returned, once per attempt. The job's
-- status is the supervisor's to change; this only records and announces.
-- ARGV: prefix, id, attempt, token, 'result'|'error', payload, permanent.
local id = ARGV[2]
local key = job_key(id)
if not is_current(key, ARGV[3], ARGV[4]) or hget(key, 'status') ~= 'running' then
  return 0
end
local a = 'a:' .. ARGV[3] .. ':'
if redis.call('HSETNX', key, a .. 'report', ARGV[5]) == 0 then return 0 end
if ARGV[5] == 'result' then
  redis.call('HSET', key, a .. 'result', ARGV[6])
else
  redis.call('HSET', key, a .. 'error', ARGV[6], a .. 'permanent', ARGV[7])
end
publish({ id = id, type = 'report', attempt = tonumber(ARGV[3]) })
return 1
