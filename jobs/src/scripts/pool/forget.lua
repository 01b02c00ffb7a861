-- A pooled machine is destroyed: it leaves the pool, which the upkeep
-- then refills. A: machine_id.
local record = record_of(A.machine_id)
if not record then return 0 end
redis.call('HDEL', MACHINES, A.machine_id)
redis.call('SREM', members_key(record.pool), A.machine_id)
redis.call('ZREM', ready_key(record.pool), A.machine_id)
return 1
