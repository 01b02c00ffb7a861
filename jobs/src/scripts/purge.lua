-- Removes jobs that finished more than `retention_ms` ago, with every index
-- entry and their attempts' logs, so nothing grows without bound. Returns how many were removed.
-- ARGV: prefix, retention_ms, limit.
local retention_ms, limit = ARGV[2], ARGV[3]
local cutoff = NOW - tonumber(retention_ms)
local ids = redis.call('ZRANGEBYSCORE', P .. 'finished', '-inf', int(cutoff), 'LIMIT', 0, tonumber(limit))
for _, id in ipairs(ids) do
  local key = job_key(id)
  local status = hget(key, 'status')
  if status then
    local by_status, by_status_kind = status_indexes(key, status)
    redis.call('ZREM', by_status, id)
    redis.call('ZREM', by_status_kind, id)
  end
  forget_member(id, key)
  local kind = hget(key, 'kind')
  if kind then redis.call('ZREM', kind_key(kind), id) end
  -- Each attempt's log lives as long as the job (see append_log.lua).
  for n = 1, tonumber(hget(key, 'attempt') or '0') do
    redis.call('DEL', log_key(id, n))
  end
  forget_run_options(id, key)
  redis.call('DEL', key, secrets_key(id))
  redis.call('ZREM', P .. 'jobs', id)
  redis.call('ZREM', P .. 'finished', id)
end
return #ids
