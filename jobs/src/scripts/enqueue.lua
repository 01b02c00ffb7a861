-- A new job. ARGV: prefix, then one JSON argument (`EnqueueArgs` in
-- store.rs; `params`, `backoff`, `machine` and `secrets` are JSON text,
-- stored as given; optional fields are absent, never null):
--   { "id", "kind", "params", "priority", "max_attempts", "timeout_secs",
--     "backoff", "machine", "delay_ms", "callback_url"?,
--     "idempotency"? = { "key", "request_hash", "ttl_ms" }, "secrets"?,
--     "flow" = { "concurrency_key"?, "singleton_key"?, "singleton_policy"?,
--                "debounce_ms"? } (`jobs::flow::FlowOptions`),
--     "run" = { "tags"?, "expire_after_ms"?, "oom_ladder"?, "child_of"? }
--             (`jobs::RunOptions`, applied by run_options.lua) }
-- Returns {job = ...}, or {existing = id} when the idempotency key was
-- used for the same request, or {conflict = id} when for another one, or
-- {joined = job} when a singleton key's waiting job (or open debounce)
-- took the submit instead (see flow.lua).
local A = cjson.decode(ARGV[2])
local id = A.id
local key = job_key(id)
local idem = A.idempotency
if idem then
  local first, same = idempotency_seen(idempotency_key(idem.key), idem.request_hash)
  if first then
    if same then return cjson.encode({ existing = first }) end
    return cjson.encode({ conflict = first })
  end
  idempotency_remember(idempotency_key(idem.key), id, idem.request_hash, idem.ttl_ms)
end
if redis.call('EXISTS', key) == 1 then
  return redis.error_reply('EXISTS job ' .. id)
end
local flow = A.flow
local joined = fq_singleton_admit(flow, A.params)
if joined then
  -- A repeat under the idempotency key finds the job it joined.
  if idem then
    idempotency_remember(idempotency_key(idem.key), joined, idem.request_hash, idem.ttl_ms)
  end
  return cjson.encode({ joined = hgetall(job_key(joined)) })
end
local fields = { 'params', A.params,
  'priority', int(A.priority), 'max_attempts', int(A.max_attempts),
  'timeout_secs', int(A.timeout_secs), 'backoff', A.backoff, 'machine', A.machine }
local function add(name, value)
  fields[#fields + 1] = name
  fields[#fields + 1] = value
end
-- Flow control's fields go in the same write.
for _, name in ipairs({ 'concurrency_key', 'singleton_key', 'singleton_policy' }) do
  if flow[name] then add(name, flow[name]) end
end
if flow.debounce_ms then add('debounce', '1') end
if A.callback_url then add('callback_url', A.callback_url) end
if idem then add('idempotency_key', idem.key) end
store_job(id, key, A.kind, fields, A.secrets, A.run)
fq_singleton_stored(flow, id)
local delay = flow.debounce_ms or A.delay_ms
if delay > 0 then
  schedule(id, key, nil, NOW + delay)
else
  push_queue(id, key, nil)
end
return cjson.encode({ job = hgetall(key) })
