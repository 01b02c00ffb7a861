-- A reaper takes over an attempt whose lease ran out (its dispatcher died
-- or handed it back). Atomic, so only one dispatcher wins. Returns nil
-- when the lease is not (or no longer) expired, else the job, the attempt
-- number and whether the attempt is still current.
-- ARGV: prefix, member ("{id}/{attempt}"), owner, lease_ms.
local member = ARGV[2]
local deadline = redis.call('ZSCORE', P .. 'in_flight', member)
if not deadline or tonumber(deadline) > NOW then return nil end
redis.call('ZADD', P .. 'in_flight', int(NOW + tonumber(ARGV[4])), member)
local id, n = string.match(member, '^(.+)/(%d+)$')
local key = job_key(id)
if redis.call('EXISTS', key) == 0 then
  return cjson.encode({ id = id, attempt = tonumber(n), current = false })
end
redis.call('HSET', key, 'a:' .. n .. ':owner', ARGV[3])
local current = is_current(key, n, hget(key, 'token'))
return cjson.encode({ id = id, attempt = tonumber(n), current = current, job = hgetall(key) })
