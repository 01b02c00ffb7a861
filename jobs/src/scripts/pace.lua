-- A token bucket shared by every dispatcher (the app's create budget), as
-- a reservation: the caller takes a token now, even one not yet refilled,
-- and is told how long to wait for it, so callers queue in order.
-- ARGV[2] is JSON: bucket (name), per_sec, burst.
-- Returns the wait in ms.
local A = cjson.decode(ARGV[2])
local key = P .. 'pace:' .. A.bucket
local rate, burst = tonumber(A.per_sec), tonumber(A.burst)
local tokens = tonumber(redis.call('HGET', key, 'tokens') or burst)
local updated = tonumber(redis.call('HGET', key, 'updated') or NOW)
tokens = math.min(burst, tokens + math.max(0, NOW - updated) * rate / 1000) - 1
redis.call('HSET', key, 'tokens', tostring(tokens), 'updated', int(NOW))
-- Gone once full again, so idle buckets cost nothing.
redis.call('PEXPIRE', key, int(math.ceil((burst - tokens) / rate * 1000) + 1000))
if tokens >= 0 then return 0 end
return int(math.ceil(-tokens / rate * 1000))
