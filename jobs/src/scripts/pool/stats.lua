-- Per pool: machines, ready, in use, warming. A: (none).
local out = {}
for _, pool in ipairs(redis.call('SMEMBERS', P .. 'pools')) do
  local members = redis.call('SMEMBERS', members_key(pool))
  local in_use = 0
  for _, id in ipairs(members) do
    local record = record_of(id)
    if record and record.state == 'in_use' then in_use = in_use + 1 end
  end
  local warming = warming_key(pool)
  out[pool] = {
    machines = #members,
    ready = redis.call('ZCARD', ready_key(pool)),
    in_use = in_use,
    warming = redis.call('ZCOUNT', warming, '(' .. int(NOW), '+inf'),
  }
end
if next(out) == nil then return '{}' end
return cjson.encode(out)
