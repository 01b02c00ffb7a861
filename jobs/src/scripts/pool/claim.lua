-- Binds a ready machine of the pool to an attempt, and records it as the
-- attempt's machine in the same step: a dispatcher that dies right after
-- leaves the machine findable from the attempt (its successor starts it),
-- never lost to the pool, and never handed to a second attempt.
-- A: pool, image (machines of another image are set aside for
-- replacement, never claimed), job_id, attempt, token.
-- Returns the machine id, or nil when none is ready (or the attempt is no
-- longer current).
local key = job_key(A.job_id)
if not is_current(key, A.attempt, A.token) then return nil end
local ready = ready_key(A.pool)
while true do
  -- The machine idle longest first: Fly limits starts per machine (1/s,
  -- burst 3), so spreading claims over the pool keeps every start within
  -- its machine's budget, where reusing the last one would queue on it.
  local popped = redis.call('ZPOPMIN', ready)
  if #popped == 0 then return nil end
  local id = popped[1]
  local record = record_of(id)
  if record and record.state == 'ready' then
    if record.image == A.image then
      record.state = 'in_use'
      record.job_id = A.job_id
      record.attempt = A.attempt
      record.token = A.token
      record.booted = false
      save(id, record)
      local a = 'a:' .. A.attempt .. ':'
      redis.call('HSET', key, a .. 'machine_id', id)
      return id
    end
    -- Built from an old image: retire it (the upkeep destroys it).
    record.state = 'retiring'
    save(id, record)
  end
end
