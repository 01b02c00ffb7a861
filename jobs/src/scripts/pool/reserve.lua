-- A dispatcher reserves the right to create one machine for a pool, so
-- that dispatchers together keep the pool at its target and no more.
-- A: pool, name (the machine's name), target, ttl_ms (how long the
-- reservation lasts if its creator dies).
-- Returns 1 when reserved, 0 when the pool is full (or being filled).
local warming = warming_key(A.pool)
redis.call('ZREMRANGEBYSCORE', warming, '-inf', int(NOW))
local size = redis.call('SCARD', members_key(A.pool)) + redis.call('ZCARD', warming)
if size >= tonumber(A.target) then return 0 end
redis.call('ZADD', warming, int(NOW + tonumber(A.ttl_ms)), A.name)
redis.call('SADD', P .. 'pools', A.pool)
return 1
