-- Binds a ready machine of the pool to an attempt, and records it as the
-- attempt's machine in the same step: a dispatcher that dies right after
-- leaves the machine findable from the attempt (its successor starts it),
-- never lost to the pool, and never handed to a second attempt.
-- A: pool, image (machines of another image are left for the upkeep to
-- replace, never claimed), job_id, attempt, token.
-- Returns the machine id, or nil when none is ready (or the attempt is no
-- longer current).
local key = job_key(A.job_id)
if not is_current(key, A.attempt, A.token) then return nil end
local ready = ready_key(A.pool)
-- Machines of an old image stay in the ready set, where the upkeep's
-- retire.lua finds them on its next tick (one at a time, so a deploy's
-- replacements never burst the create budget). Marking them aside here
-- instead would hide them from it until the 30 s abandonment check, and
-- the pool would run short by them that long after every deploy.
local old = {}
local function claimed(id)
  for _, skipped in ipairs(old) do redis.call('ZADD', ready, skipped[2], skipped[1]) end
  return id
end
while true do
  -- The machine idle longest first: Fly limits starts per machine (1/s,
  -- burst 3), so spreading claims over the pool keeps every start within
  -- its machine's budget, where reusing the last one would queue on it.
  local popped = redis.call('ZPOPMIN', ready)
  if #popped == 0 then return claimed(nil) end
  local id = popped[1]
  local record = record_of(id)
  if record and record.state == 'ready' then
    if record.image ~= A.image then
      table.insert(old, popped)
    else
      record.state = 'in_use'
      record.job_id = A.job_id
      record.attempt = A.attempt
      record.token = A.token
      record.booted = false
      save(id, record)
      local a = 'a:' .. A.attempt .. ':'
      redis.call('HSET', key, a .. 'machine_id', id)
      return claimed(id)
    end
  end
end
