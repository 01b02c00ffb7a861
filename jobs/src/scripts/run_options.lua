-- Run management, shared by the scripts that store, claim, finish and
-- purge jobs (loaded after prelude.lua, fan_in.lua and flow.lua): tags,
-- expiry of jobs that never started, the OOM ladder and the children of a
-- job; and `store_job`, the one writer of a new job.
--
-- Keys (besides prelude.lua's):
--   tag:{tag}             zset, score 0: jobs with the tag (ordered by id)
--   expiry                zset: jobs that expire unless started, by deadline
--   children:{parent}     zset, score 0: the jobs `parent` enqueued
--   child_keys:{parent}   hash: child key -> child id (a retried parent
--                         enqueuing the same key finds its child)
--   child_batches:{parent} hash: batch key -> batch id, the same for the
--                         batches a job enqueued (submit.lua)

local function tag_key(tag) return P .. 'tag:' .. tag end
local function children_key(parent) return P .. 'children:' .. parent end
local function child_keys_key(parent) return P .. 'child_keys:' .. parent end
local function child_batches_key(parent) return P .. 'child_batches:' .. parent end

-- Records job `id` (hash `key`) as enqueued by job `parent`: listed with
-- its children. A child also has a key of its own (apply_run_options); a
-- member of a batch the parent enqueued is known by its batch and index.
local function adopt(parent, id, key)
  redis.call('HSET', key, 'parent', parent)
  redis.call('ZADD', children_key(parent), 0, id)
end

-- `options` is the decoded `run_options` argument (jobs::RunOptions).
local function apply_run_options(id, key, options)
  if options.tags and #options.tags > 0 then
    redis.call('HSET', key, 'tags', cjson.encode(options.tags))
    for _, tag in ipairs(options.tags) do redis.call('ZADD', tag_key(tag), 0, id) end
  end
  if options.expire_after_ms then
    local at = NOW + options.expire_after_ms
    redis.call('HSET', key, 'expire_at', int(at))
    redis.call('ZADD', P .. 'expiry', int(at), id)
  end
  if options.oom_ladder then
    redis.call('HSET', key, 'oom_max_memory_mb', int(options.oom_ladder.max_memory_mb))
  end
  if options.child_of then
    local parent = options.child_of.parent
    adopt(parent, id, key)
    redis.call('HSET', key, 'child_key', options.child_of.key)
    redis.call('HSET', child_keys_key(parent), options.child_of.key, id)
  end
end

-- Writes a new job, for enqueue.lua and submit.lua alike: its hash (the
-- bookkeeping fields, then `fields`, a flat name, value list), its
-- write-only secrets apart (JSON text, or nil), its run options, and the
-- all-jobs and per-kind indexes. Its status is the caller's next step.
local function store_job(id, key, kind, fields, secrets, run)
  redis.call('HSET', key, 'id', id, 'kind', kind, 'created_at', int(NOW),
    'updated_at', int(NOW), 'attempt', '0', 'attempt_base', '0', unpack(fields))
  if secrets then
    redis.call('SET', secrets_key(id), secrets)
    redis.call('HSET', key, 'has_secrets', '1')
  end
  apply_run_options(id, key, run)
  redis.call('ZADD', P .. 'jobs', 0, id)
  redis.call('ZADD', kind_key(kind), 0, id)
end

-- A job that is claimed has started: it can no longer expire.
local function started(id)
  redis.call('ZREM', P .. 'expiry', id)
end

-- Ends up to `limit` jobs whose deadline passed while they waited
-- (`queued`, `scheduled` or `waiting`); the others left the index when they were
-- claimed or finished. claim.lua calls it first, so no job starts past
-- its deadline; launchers claim at least once a second, even when every
-- slot is taken, so expiry is never later than that.
local function expire_due(limit)
  local due = redis.call('ZRANGEBYSCORE', P .. 'expiry', '-inf', int(NOW), 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    redis.call('ZREM', P .. 'expiry', id)
    local key = job_key(id)
    local status = hget(key, 'status')
    if status == 'queued' or status == 'scheduled' or status == 'waiting' then
      leave_queue(id, key, status)
      redis.call('HSET', key, 'error', 'expired: not started by its expire_at')
      finish(id, key, status, 'expired')
    end
  end
end

-- The OOM ladder: after an attempt ended `oom`, the job's machine gets
-- twice the memory (Fly's sizes double) up to the job's cap. `a` is the
-- attempt's field prefix; the step is recorded there.
local function oom_step_up(key, a)
  local cap = tonumber(hget(key, 'oom_max_memory_mb') or '0')
  local machine = cjson.decode(hget(key, 'machine'))
  local next_mb = math.min(machine.memory_mb * 2, cap)
  if next_mb <= machine.memory_mb then return end
  machine.memory_mb = next_mb
  redis.call('HSET', key, 'machine', cjson.encode(machine), a .. 'next_memory_mb', int(next_mb))
end

-- Removes a purged job from the run management indexes; a purged parent
-- takes the record of its children's (and batches') keys with it.
local function forget_run_options(id, key)
  local tags = hget(key, 'tags')
  if tags then
    for _, tag in ipairs(cjson.decode(tags)) do redis.call('ZREM', tag_key(tag), id) end
  end
  local parent = hget(key, 'parent')
  if parent then redis.call('ZREM', children_key(parent), id) end
  redis.call('DEL', children_key(id), child_keys_key(id), child_batches_key(id))
  redis.call('ZREM', P .. 'expiry', id)
end
