-- A reserved machine was created, booted once and is stopped: it joins
-- the pool. A: pool, name, machine_id, image.
-- Returns 1, or 0 when the reservation had expired (the caller destroys
-- the machine: the pool was refilled without it).
if redis.call('ZREM', warming_key(A.pool), A.name) == 0 then return 0 end
save(A.machine_id, { pool = A.pool, image = A.image, state = 'ready' })
redis.call('SADD', members_key(A.pool), A.machine_id)
redis.call('ZADD', ready_key(A.pool), int(NOW), A.machine_id)
return 1
