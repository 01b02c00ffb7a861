-- Stores jobs that wait for others, and batches: all of them or nothing.
-- ARGV[2] is one JSON object (built by `jobs::fan_in::Submit`):
--   jobs       [job], in order; a batch's members, or one job and its `then`
--   batch      {id, callback_url ('' none), then_policy, idempotency,
--              parent?} or null; `parent` = {job, attempt, token, key} when
--              a running job enqueues the batch (child_fence.lua fences it)
--   batch_then job or null: the batch's `then` job, waiting for the batch
-- A job is {id, fields (its hash, string values), delay_ms, secrets ('' none),
-- idempotency ({key, hash, ttl_ms} or null), after (job ids: stored ones, or
-- ids of earlier jobs of this call), run_if, run (`jobs::RunOptions`: tags,
-- expiry, OOM ladder; applied by run_options.lua)}.
-- Nothing is written until every check passed. Answers (JSON):
--   {stale = true}: the parent's attempt is not current
--   {batch_existing = id} / {batch_conflict = id}: the batch's idempotency key
--     (or, with a parent, its key within the parent) named a stored batch
--   {existing = id}: no batch, and the first job's key named a stored job
--   {conflict = {index, id}}: a job's key was used for another request
--   {missing = {index, id}}: a job waits for a job that does not exist
--   {ids = [id], existing = [index]}: stored; `ids` per job, in order (a
--   repeat under a job's key gives the stored job's id, listed in `existing`)
local request = cjson.decode(ARGV[2])
local batch = request.batch
if batch == cjson.null then batch = nil end
local batch_then = request.batch_then
if batch_then == cjson.null then batch_then = nil end

-- An idempotency key's stored `{id} {hash}`: nil when unused, else the
-- stored id and whether the request matches.
local function seen(idempotency, prefix)
  if idempotency == nil or idempotency == cjson.null then return nil end
  return idempotency_seen(P .. prefix .. idempotency.key, idempotency.hash)
end

local function remember(idempotency, prefix, id)
  if idempotency == nil or idempotency == cjson.null then return end
  idempotency_remember(P .. prefix .. idempotency.key, id, idempotency.hash, idempotency.ttl_ms)
end

-- The job enqueueing the batch, if a running job does (members, the
-- batch and its `then` job record it).
local parent = batch and batch.parent
if parent == cjson.null then parent = nil end

-- Checks, no writes.
if parent then
  local refused = child_fence(parent.job, parent, child_batches_key(parent.job), parent.key)
  if refused then
    return cjson.encode({ stale = refused.stale, batch_existing = refused.existing })
  end
end
if batch then
  local first, same = seen(batch.idempotency, 'batch_idempotency:')
  if first then
    if same then return cjson.encode({ batch_existing = first }) end
    return cjson.encode({ batch_conflict = first })
  end
end
local ids, existing, in_call = {}, {}, {}
for i, job in ipairs(request.jobs) do
  local first, same = seen(job.idempotency, 'idempotency:')
  if first and not same then
    return cjson.encode({ conflict = { index = i - 1, id = first } })
  end
  if first then
    if not batch then return cjson.encode({ existing = first }) end
    ids[i] = first
    existing[#existing + 1] = i - 1
  else
    ids[i] = job.id
    for _, dep in ipairs(job.after) do
      if not in_call[dep] and redis.call('EXISTS', job_key(dep)) == 0 then
        return cjson.encode({ missing = { index = i - 1, id = dep } })
      end
    end
    in_call[job.id] = true
  end
end
if batch_then then
  for _, dep in ipairs(batch_then.after) do
    if redis.call('EXISTS', job_key(dep)) == 0 then
      return cjson.encode({ missing = { index = -1, id = dep } })
    end
  end
end

for _, job in ipairs(request.jobs) do
  if redis.call('EXISTS', job_key(job.id)) == 1 then
    return redis.error_reply('EXISTS job ' .. job.id)
  end
end

local function write_job(job)
  local key = job_key(job.id)
  local fields = {}
  for name, value in pairs(job.fields) do
    if name ~= 'kind' then
      fields[#fields + 1] = name
      fields[#fields + 1] = value
    end
  end
  if job.idempotency ~= cjson.null then
    fields[#fields + 1] = 'idempotency_key'
    fields[#fields + 1] = job.idempotency.key
    remember(job.idempotency, 'idempotency:', job.id)
  end
  local secrets = job.secrets ~= '' and job.secrets or nil
  store_job(job.id, key, job.fields.kind, fields, secrets, job.run)
  if parent then adopt(parent.job, job.id, key) end
  return key
end

-- A job's `after` as stored (for its inputs), and its waiting rule.
local function with_waits(job, after_batch)
  if #job.after > 0 then job.fields.after = cjson.encode(job.after) end
  if after_batch then job.fields.after_batch = after_batch end
  if #job.after > 0 or after_batch then job.fields.run_if = job.run_if end
  return job
end

-- Writes.
if batch then
  -- Thousands of members are announced once, by the batch's event and a
  -- single wake-up of the launchers, not one event each.
  quiet = true
  local bkey = batch_key(batch.id)
  local total = #request.jobs - #existing
  redis.call('HSET', bkey, 'id', batch.id, 'total', int(total), 'final', '0',
    'created_at', int(NOW), 'then_policy', batch.then_policy)
  if batch.callback_url ~= '' then redis.call('HSET', bkey, 'callback_url', batch.callback_url) end
  if batch.idempotency ~= cjson.null then
    redis.call('HSET', bkey, 'idempotency_key', batch.idempotency.key)
  end
  redis.call('ZADD', P .. 'batches', 0, batch.id)
  if parent then
    redis.call('HSET', bkey, 'parent', parent.job, 'child_key', parent.key)
    redis.call('HSET', child_batches_key(parent.job), parent.key, batch.id)
  end
  remember(batch.idempotency, 'batch_idempotency:', batch.id)
  if batch_then then
    redis.call('HSET', bkey, 'then', batch_then.id)
    local key = write_job(with_waits(batch_then, batch.id))
    place(batch_then.id, key, batch_then.after, batch.id, batch_then.delay_ms)
  end
  local is_existing = {}
  for _, index in ipairs(existing) do is_existing[index + 1] = true end
  for i, job in ipairs(request.jobs) do
    if not is_existing[i] then
      job.fields.batch = batch.id
      job.fields.batch_index = int(i - 1)
      local key = write_job(with_waits(job, nil))
      redis.call('ZADD', bkey .. ':jobs', 0, job.id)
      place(job.id, key, job.after, nil, job.delay_ms)
    end
  end
  if total == 0 then complete_batch(batch.id) end
  quiet = false
  publish({ id = batch.id, type = 'batch' })
  -- (The counter, not ZCARD: the runner's store user may not run ZCARD.)
  if tonumber(hget(bkey, 'n:queued') or '0') > 0 then
    publish({ id = batch.id, type = 'status', status = 'queued' })
  end
else
  for _, job in ipairs(request.jobs) do
    local key = write_job(with_waits(job, nil))
    place(job.id, key, job.after, nil, job.delay_ms)
  end
end
-- (cjson writes an empty table as an object: leave it out instead.)
return cjson.encode({ ids = ids, existing = #existing > 0 and existing or nil })
