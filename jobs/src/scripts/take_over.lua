-- A reaper takes over an attempt whose lease ran out (its dispatcher died,
-- hung, or handed it back). Atomic, so only one dispatcher wins. Returns
-- nil when the lease is not (or no longer) expired, else the job, the
-- attempt number, whether the attempt is still current, and the new
-- owner's epoch: from here on the previous owner's writes are refused.
-- ARGV: prefix, member ("{id}/{attempt}"), owner, lease_ms.
local member, owner, lease_ms = ARGV[2], ARGV[3], tonumber(ARGV[4])
local deadline = redis.call('ZSCORE', P .. 'in_flight', member)
if not deadline or tonumber(deadline) > NOW then return nil end
redis.call('ZADD', P .. 'in_flight', int(NOW + lease_ms), member)
local epoch = new_epoch(member)
local id, n = parse_member(member)
local key = job_key(id)
if redis.call('EXISTS', key) == 0 then
  return cjson.encode({ id = id, attempt = tonumber(n), current = false, epoch = epoch })
end
redis.call('HSET', key, 'a:' .. n .. ':owner', owner)
local current = is_current(key, n, hget(key, 'token'))
return cjson.encode({ id = id, attempt = tonumber(n), current = current, job = hgetall(key), epoch = epoch })
