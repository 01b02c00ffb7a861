-- Batches and dependencies, kept by the scripts that move jobs (appended
-- after prelude.lua to every script, so no transition can forget them).
--
-- A batch member has `batch` (the batch id) and `batch_index`. Each of its
-- status changes moves the batch's counters (`n:{status}` and `final` in
-- `batch:{id}`) and its per-status index (`batch:{id}:status:{status}`),
-- in the same script: the counts are exact, never recomputed by a scan.
-- The change that makes `final` reach `total` completes the batch: that
-- happens once (`completed_at` latches it), however many dispatchers
-- finish members at the same moment, since scripts run one at a time.
--
-- A job waiting for others is `waiting` with `waiting_on` = how many of
-- them are not final yet, and its id in each one's `dependents:{id}` set
-- (or, for a batch's `then` job, as the batch's `then`). `run_if` says
-- what the job needs: 'all_succeeded' (cancelled, naming the first that
-- did not succeed) or 'all_finished' (runs whatever they ended as).

local FINAL = { succeeded = true, failed = true, cancelled = true, expired = true }

local function batch_key(bid) return P .. 'batch:' .. bid end

-- What a released job receives as `inputs`: each job it waited for, or
-- its batch's counts and members.
local function job_input(id)
  local f = redis.call('HMGET', job_key(id), 'status', 'result', 'error', 'batch_index')
  local input = { id = id, status = f[1] or 'purged' }
  if f[2] then input.result = cjson.decode(f[2]) end
  if f[3] then input.error = f[3] end
  if f[4] then input.index = tonumber(f[4]) end
  return input
end

local function batch_counts(bkey)
  local counts = {}
  local flat = redis.call('HGETALL', bkey)
  for i = 1, #flat, 2 do
    local status = string.match(flat[i], '^n:(.*)$')
    if status then counts[status] = tonumber(flat[i + 1]) end
  end
  return counts
end

local function inputs_of(key)
  local bid = hget(key, 'after_batch')
  if bid then
    local jobs = {}
    for _, id in ipairs(redis.call('ZRANGE', batch_key(bid) .. ':jobs', 0, -1)) do
      jobs[#jobs + 1] = job_input(id)
    end
    return { batch = bid, counts = batch_counts(batch_key(bid)), jobs = jobs }
  end
  local jobs = {}
  for _, id in ipairs(cjson.decode(hget(key, 'after') or '[]')) do
    jobs[#jobs + 1] = job_input(id)
  end
  return { jobs = jobs }
end

-- Everything the job waited for is final: it runs now (or at the time it
-- was submitted to run at).
local function release(id, key)
  redis.call('HSET', key, 'inputs', cjson.encode(inputs_of(key)))
  redis.call('HDEL', key, 'waiting_on')
  local not_before = tonumber(hget(key, 'not_before') or '0')
  redis.call('HDEL', key, 'not_before')
  if not_before > NOW then
    schedule(id, key, 'waiting', not_before)
  else
    push_queue(id, key, 'waiting')
  end
end

-- One of what the waiting job `id` waits for became final. `what` names
-- it for the reason given when the job is cancelled.
local function settle(id, what, succeeded)
  local key = job_key(id)
  if hget(key, 'status') ~= 'waiting' then return end
  if not succeeded and hget(key, 'run_if') == 'all_succeeded' then
    redis.call('HDEL', key, 'waiting_on', 'not_before')
    redis.call('HSET', key, 'error', 'cancelled: ' .. what .. ' did not succeed')
    finish(id, key, 'waiting', 'cancelled')
    return
  end
  if redis.call('HINCRBY', key, 'waiting_on', -1) <= 0 then release(id, key) end
end

-- Called by the script that stores a job, after its hash is written: it
-- waits for `after` (job ids, each existing: the caller checked) and for
-- `after_batch` (a batch id, or nil), or runs `delay_ms` from now.
local function place(id, key, after, after_batch, delay_ms)
  local pending = 0
  local failed = nil
  for _, dep in ipairs(after) do
    local status = hget(job_key(dep), 'status')
    if FINAL[status] then
      if status ~= 'succeeded' and not failed then failed = dep end
    else
      redis.call('SADD', P .. 'dependents:' .. dep, id)
      pending = pending + 1
    end
  end
  if after_batch then pending = pending + 1 end
  if #after == 0 and not after_batch then
    if delay_ms > 0 then schedule(id, key, nil, NOW + delay_ms) else push_queue(id, key, nil) end
    return
  end
  redis.call('HSET', key, 'waiting_on', int(pending))
  if delay_ms > 0 then redis.call('HSET', key, 'not_before', int(NOW + delay_ms)) end
  set_status(id, key, nil, 'waiting')
  if failed then
    settle(id, 'dependency ' .. failed, false)
    if hget(key, 'status') ~= 'waiting' then return end
  end
  if pending == 0 then release(id, key) end
end

local function complete_batch(bid)
  local bkey = batch_key(bid)
  if hget(bkey, 'completed_at') then return end
  redis.call('HSET', bkey, 'completed_at', int(NOW))
  -- The callback outbox: one dispatcher pops each entry and delivers it.
  if hget(bkey, 'callback_url') then redis.call('RPUSH', P .. 'batch_callbacks', bid) end
  local then_id = hget(bkey, 'then')
  if then_id then
    local all = tonumber(hget(bkey, 'n:succeeded') or '0') == tonumber(hget(bkey, 'total'))
    settle(then_id, 'a member of batch ' .. bid, all)
  end
  publish({ id = bid, type = 'batch' })
end

table.insert(status_listeners, function(id, key, from, to)
  local bid = hget(key, 'batch')
  if bid then
    local bkey = batch_key(bid)
    local was_final, is_final = from and FINAL[from], FINAL[to]
    if from then
      redis.call('HINCRBY', bkey, 'n:' .. from, -1)
      redis.call('ZREM', bkey .. ':status:' .. from, id)
    end
    redis.call('HINCRBY', bkey, 'n:' .. to, 1)
    redis.call('ZADD', bkey .. ':status:' .. to, 0, id)
    if was_final and not is_final then
      redis.call('HINCRBY', bkey, 'final', -1)
    elseif is_final and not was_final then
      local final = redis.call('HINCRBY', bkey, 'final', 1)
      if final >= tonumber(hget(bkey, 'total')) then complete_batch(bid) end
    end
    if not quiet then publish({ id = bid, type = 'batch', status = to }) end
  end
  if FINAL[to] and not (from and FINAL[from]) then
    local set = P .. 'dependents:' .. id
    local waiting = redis.call('SMEMBERS', set)
    if #waiting > 0 then
      redis.call('DEL', set)
      for _, dependent in ipairs(waiting) do
        settle(dependent, 'dependency ' .. id, to == 'succeeded')
      end
    end
  end
end)

-- A purged member leaves its batch's listings; the batch's own keys go
-- with its last member.
local function forget_member(id, key)
  local bid = hget(key, 'batch')
  if not bid then return end
  local bkey = batch_key(bid)
  local status = hget(key, 'status')
  if status then redis.call('ZREM', bkey .. ':status:' .. status, id) end
  redis.call('ZREM', bkey .. ':jobs', id)
  if redis.call('ZCARD', bkey .. ':jobs') == 0 and hget(bkey, 'completed_at') then
    for field, _ in pairs(batch_counts(bkey)) do
      redis.call('DEL', bkey .. ':status:' .. field)
    end
    redis.call('DEL', bkey)
    redis.call('ZREM', P .. 'batches', bid)
  end
end
