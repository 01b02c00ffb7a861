-- A reserved machine could not be made ready: its reservation goes, so
-- the pool is refilled at once. A: pool, name.
return redis.call('ZREM', warming_key(A.pool), A.name)
