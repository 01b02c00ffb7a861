-- Picks one ready machine to retire: built from an old image, or idle
-- beyond the pool's target for longer than idle_ms. One at a time, so
-- replacing a pool after a deploy never bursts the create budget.
-- A: pool, image, target, idle_ms. Returns a machine id or nil.
local ready = ready_key(A.pool)
local ids = redis.call('ZRANGE', ready, 0, -1)
local surplus = redis.call('SCARD', members_key(A.pool)) - tonumber(A.target)
for _, id in ipairs(ids) do
  local record = record_of(id)
  local idle = record and (NOW - tonumber(redis.call('ZSCORE', ready, id))) >= tonumber(A.idle_ms)
  if not record or record.image ~= A.image or (surplus > 0 and idle) then
    redis.call('ZREM', ready, id)
    if record then
      record.state = 'retiring'
      save(id, record)
    end
    return id
  end
end
-- Machines set aside earlier (by a dispatcher that died
-- while destroying them), and machines still bound to an attempt that
-- holds no slot any more (its dispatcher could not return them).
local function abandoned(record)
  if record.state == 'retiring' then return true end
  return record.state == 'in_use' and redis.call('ZSCORE', P .. 'in_flight',
    member_of(record.job_id, record.attempt)) == false
end
for id, text in pairs(hgetall(MACHINES)) do
  local record = cjson.decode(text)
  if record.pool == A.pool and NOW - tonumber(record.since) >= 30000 and abandoned(record) then
    redis.call('ZREM', ready, id)
    record.state = 'retiring'
    save(id, record)
    return id
  end
end
return nil
