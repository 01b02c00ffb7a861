-- Reads flow-control state (see `jobs::flow`). ARGV[2] is JSON: `op` and
-- its fields:
--   overview {top}: the settings, and the `top` keys holding the most
--     machines (bounded by the fleet: only keys with a slot are counted)
--   waiting {kind, key ('' none)}: why a queued job of that kind and key
--     is held back, if it is: {reason, scope, retry_in_ms}, else null
local A = cjson.decode(ARGV[2])
local function pairs_of(flat)
  local out = {}
  for i = 1, #flat, 2 do out[#out + 1] = { flat[i], flat[i + 1] } end
  return out
end
if A.op == 'waiting' then
  local reason, wait = fq_key_blocked(A.key)
  local scope = 'key:' .. A.key
  if not reason then
    reason, wait = fq_kind_blocked(A.kind, {})
    scope = 'kind:' .. A.kind
  end
  if not reason then return 'null' end
  return cjson.encode({ reason = reason, scope = scope, retry_in_ms = wait })
end
local limits = {}
for _, kv in ipairs(pairs_of(redis.call('HGETALL', FQ .. 'limits'))) do
  limits[kv[1]] = tonumber(kv[2])
end
local rates = {}
for _, kv in ipairs(pairs_of(redis.call('HGETALL', FQ .. 'rates'))) do
  rates[kv[1]] = cjson.decode(kv[2])
end
local loads = {}
for _, kv in ipairs(pairs_of(redis.call('HGETALL', FQ .. 'in_flight_keys'))) do
  loads[#loads + 1] = { key = kv[1], in_flight = tonumber(kv[2]) }
end
table.sort(loads, function(a, b)
  if a.in_flight ~= b.in_flight then return a.in_flight > b.in_flight end
  return a.key < b.key
end)
local top = {}
for i = 1, math.min(#loads, A.top) do
  local load = loads[i]
  load.queued = redis.call('ZCARD', fq_queue(load.key))
  load.limit = fq_limit(load.key)
  top[i] = load
end
return cjson.encode({
  default_limit = tonumber(redis.call('GET', FQ .. 'default_limit') or '0'),
  limits = limits,
  rates = rates,
  paused_kinds = redis.call('SMEMBERS', FQ .. 'paused:kinds'),
  paused_keys = redis.call('SMEMBERS', FQ .. 'paused:keys'),
  ring_keys = redis.call('ZCARD', FQ .. 'ring'),
  keys_holding_machines = #loads,
  top_keys = top,
})
