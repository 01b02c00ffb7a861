-- Changes a flow-control setting at runtime (see `jobs::flow`). ARGV[2]
-- is JSON: `op` and its fields:
--   limit {key, limit (nil: back to the default)}
--   default_limit {limit (nil: none)}
--   rate {scope ('kind:{kind}' | 'key:{key}'), per, interval_ms, burst (nil: remove)}
--   pause {scope ('kinds' | 'keys'), name}, resume {scope, name}
-- Whatever may let a key be served again puts it back in the ring and
-- wakes every launcher (a `slot` event without a job).
local A = cjson.decode(ARGV[2])
local NO_JOB = '00000000-0000-0000-0000-000000000000'
local function back_in_ring(fkey)
  redis.call('ZREM', FQ .. 'wait', fkey)
  if redis.call('ZCARD', fq_queue(fkey)) > 0 then fq_join_ring(fkey) end
end
if A.op == 'limit' then
  if A.limit then
    redis.call('HSET', FQ .. 'limits', A.key, int(A.limit))
  else
    redis.call('HDEL', FQ .. 'limits', A.key)
  end
  back_in_ring(A.key)
elseif A.op == 'default_limit' then
  if A.limit then
    redis.call('SET', FQ .. 'default_limit', int(A.limit))
  else
    redis.call('DEL', FQ .. 'default_limit')
  end
  -- Keys held back by the old default come back as their slots free up;
  -- each release re-queues its key (fq_released).
elseif A.op == 'rate' then
  redis.call('DEL', FQ .. 'bucket:' .. A.scope)
  if A.per then
    redis.call('HSET', FQ .. 'rates', A.scope,
      cjson.encode({ per = A.per, interval_ms = A.interval_ms, burst = A.burst }))
  else
    redis.call('HDEL', FQ .. 'rates', A.scope)
  end
  local fkey = string.match(A.scope, '^key:(.*)$')
  if fkey then back_in_ring(fkey) end
elseif A.op == 'pause' then
  redis.call('SADD', FQ .. 'paused:' .. A.scope, A.name)
elseif A.op == 'resume' then
  redis.call('SREM', FQ .. 'paused:' .. A.scope, A.name)
  if A.scope == 'keys' then back_in_ring(A.name) end
else
  return redis.error_reply('unknown flow op ' .. tostring(A.op))
end
publish({ id = NO_JOB, type = 'slot' })
return 'ok'
