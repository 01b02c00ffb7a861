-- Flow control, shared by the store's scripts (after prelude.lua): which
-- queued job a claim takes (fair across concurrency keys, within their
-- limits, rate limits and pauses), what a claim and a release change, and
-- singletons. docs/flow-control.md is the user's view; `jobs::flow` the
-- key layout. Everything here is bounded: no script scans a whole queue.
local FQ = P .. 'fq:'
-- Jobs a claim looks at (queued, of a key it may serve) before giving up
-- for now: the head of the old single queue had the same bound.
local PICK_BUDGET = 200
-- Queue entries of jobs no longer queued (cancelled, replaced) a claim
-- drops before it lets the launcher call again at once.
local STALE_BUDGET = 1000

local function fq_queue(fkey) return FQ .. 'q:' .. fkey end

-- The concurrency limit of a key: its override, else the default; 0 is
-- none. Jobs without a key ('') have none: only the fleet and kind caps.
local function fq_limit(fkey)
  if fkey == '' then return 0 end
  return tonumber(redis.call('HGET', FQ .. 'limits', fkey)
    or redis.call('GET', FQ .. 'default_limit') or '0')
end

local function fq_in_flight(fkey)
  return tonumber(redis.call('HGET', FQ .. 'in_flight_keys', fkey) or '0')
end

local function fq_at_limit(fkey)
  local limit = fq_limit(fkey)
  return limit > 0 and fq_in_flight(fkey) >= limit
end

local function fq_paused(scope, name)
  return redis.call('SISMEMBER', FQ .. 'paused:' .. scope, name) == 1
end

-- Rate limits: a token bucket per scope ('kind:{kind}' or 'key:{key}'),
-- `per` tokens each `interval_ms`, holding at most `burst`. A claim
-- takes a token; nothing else writes the bucket, and it expires once
-- full, so idle scopes cost nothing. Answers the tokens there now (nil
-- when the scope has no limit), the refill rate per ms, the config and
-- the bucket's key.
local function fq_tokens(scope)
  local conf = redis.call('HGET', FQ .. 'rates', scope)
  if not conf then return nil end
  local c = cjson.decode(conf)
  local rate = c.per / c.interval_ms
  local bucket = FQ .. 'bucket:' .. scope
  local tokens = tonumber(redis.call('HGET', bucket, 'tokens') or c.burst)
  local updated = tonumber(redis.call('HGET', bucket, 'updated') or NOW)
  tokens = math.min(c.burst, tokens + math.max(0, NOW - updated) * rate)
  return tokens, rate, c, bucket
end

-- Float refills may land a hair under a whole token.
local WHOLE = 1 - 1e-9

-- Milliseconds until the scope has a token (0: it has one now).
local function fq_rate_wait(scope)
  local tokens, rate = fq_tokens(scope)
  if not tokens or tokens >= WHOLE then return 0 end
  return math.max(1, math.ceil((1 - tokens) / rate))
end

local function fq_rate_take(scope)
  local tokens, rate, c, bucket = fq_tokens(scope)
  if not tokens then return end
  tokens = tokens - 1
  redis.call('HSET', bucket, 'tokens', tostring(tokens), 'updated', int(NOW))
  redis.call('PEXPIRE', bucket, int(math.ceil((c.burst - tokens) / rate) + 1000))
end

-- Why a key cannot be served now, if it cannot: 'paused_key',
-- 'concurrency_limit', or 'rate_limit' with the wait in ms.
local function fq_key_blocked(fkey)
  if fq_paused('keys', fkey) then return 'paused_key' end
  if fq_at_limit(fkey) then return 'concurrency_limit' end
  if fkey ~= '' then
    local wait = fq_rate_wait('key:' .. fkey)
    if wait > 0 then return 'rate_limit', wait end
  end
  return nil
end

-- The same for a kind, given the dispatcher's kind caps: 'paused_kind',
-- 'kind_cap', or 'rate_limit' with the wait.
local function fq_kind_blocked(kind, caps)
  if fq_paused('kinds', kind) then return 'paused_kind' end
  local cap = caps[kind]
  if cap and tonumber(redis.call('HGET', P .. 'in_flight_kinds', kind) or '0') >= cap then
    return 'kind_cap'
  end
  local wait = fq_rate_wait('kind:' .. kind)
  if wait > 0 then return 'rate_limit', wait end
  return nil
end

-- Jobs queued before flow control existed are only in `queue`: the
-- first claims after the upgrade file them under their keys, 1,000 per
-- claim, in score order (scores are unique), then mark the store done.
local ADOPT_BATCH = 1000
local function fq_adopt_legacy()
  if redis.call('EXISTS', FQ .. 'adopted') == 1 then return end
  local from = redis.call('GET', FQ .. 'adopt_from') or '-inf'
  local batch = redis.call('ZRANGEBYSCORE', P .. 'queue', from, '+inf', 'WITHSCORES',
    'LIMIT', 0, ADOPT_BATCH)
  for i = 1, #batch, 2 do
    local fkey = hget(job_key(batch[i]), 'concurrency_key') or ''
    redis.call('ZADD', fq_queue(fkey), batch[i + 1], batch[i])
    fq_join_ring(fkey)
  end
  if #batch < 2 * ADOPT_BATCH then
    redis.call('SET', FQ .. 'adopted', '1')
    redis.call('DEL', FQ .. 'adopt_from')
  else
    redis.call('SET', FQ .. 'adopt_from', '(' .. batch[#batch])
  end
end

-- Keys parked for their rate limit come back to the ring when due.
local function fq_wake_keys()
  local due = redis.call('ZRANGEBYSCORE', FQ .. 'wait', '-inf', int(NOW), 'LIMIT', 0, 100)
  for _, fkey in ipairs(due) do
    redis.call('ZREM', FQ .. 'wait', fkey)
    fq_join_ring(fkey)
  end
end

-- The job a claim takes and its key, `{id, fkey}`; or `{wait}`, the ms
-- until a rate limit or a parked key may let one go (nil: no hint).
--
-- Keys are served in ring order (the ring's score is the turn they were
-- last served or joined). A key that cannot be served leaves the ring:
-- paused (resume puts it back), at its limit (a release does), or out of
-- rate tokens (parked in `fq:wait` until one is due). Within a key, jobs
-- are in priority order; the first whose kind is not paused, capped or
-- out of tokens is taken. A key whose looked-at jobs are all blocked by
-- their kind moves to the back, so the next claim reaches the keys
-- behind it. The scan stops at the turn counter as it was when it began,
-- so a key is looked at once per claim.
local function fq_pick(caps)
  local ring = FQ .. 'ring'
  local horizon = redis.call('GET', FQ .. 'turn') or '0'
  local after = '-inf'
  local examined, stale = 0, 0
  local due = nil
  local function soon(ms) if not due or ms < due then due = ms end end
  local kinds = {}
  local function kind_ok(kind)
    if kinds[kind] == nil then
      local blocked, wait = fq_kind_blocked(kind, caps)
      if wait then soon(wait) end
      kinds[kind] = not blocked
    end
    return kinds[kind]
  end
  while examined < PICK_BUDGET and stale < STALE_BUDGET do
    local batch = redis.call('ZRANGEBYSCORE', ring, after, horizon, 'WITHSCORES', 'LIMIT', 0, 16)
    if #batch == 0 then break end
    for i = 1, #batch, 2 do
      local fkey = batch[i]
      after = '(' .. batch[i + 1]
      local blocked, wait = fq_key_blocked(fkey)
      if blocked then
        redis.call('ZREM', ring, fkey)
        if wait then
          redis.call('ZADD', FQ .. 'wait', int(NOW + wait), fkey)
          soon(wait)
        end
      else
        local queue = fq_queue(fkey)
        local ids = redis.call('ZRANGE', queue, 0, PICK_BUDGET - examined - 1)
        for _, id in ipairs(ids) do
          if not redis.call('ZSCORE', P .. 'queue', id) then
            redis.call('ZREM', queue, id)
            stale = stale + 1
          else
            examined = examined + 1
            if kind_ok(hget(job_key(id), 'kind')) then return { id = id, fkey = fkey } end
          end
        end
        if redis.call('ZCARD', queue) == 0 then
          redis.call('ZREM', ring, fkey)
        else
          redis.call('ZADD', ring, redis.call('INCR', FQ .. 'turn'), fkey)
        end
      end
      if examined >= PICK_BUDGET or stale >= STALE_BUDGET then break end
    end
  end
  if stale >= STALE_BUDGET then soon(0) end
  local parked = redis.call('ZRANGE', FQ .. 'wait', 0, 0, 'WITHSCORES')
  if parked[2] then soon(math.max(0, tonumber(parked[2]) - NOW)) end
  return { wait = due }
end

-- A claim took `id` of key `fkey` for slot `member`: the key goes to the
-- back of the ring (or leaves it, out of work), holds one more slot until
-- the release, and the job's rate limits each lose a token.
local function fq_claimed(id, key, fkey, member)
  local queue = fq_queue(fkey)
  redis.call('ZREM', queue, id)
  if redis.call('ZCARD', queue) > 0 then
    redis.call('ZADD', FQ .. 'ring', redis.call('INCR', FQ .. 'turn'), fkey)
  else
    redis.call('ZREM', FQ .. 'ring', fkey)
  end
  redis.call('HSET', FQ .. 'in_flight_key', member, fkey)
  redis.call('HINCRBY', FQ .. 'in_flight_keys', fkey, 1)
  fq_rate_take('kind:' .. hget(key, 'kind'))
  if fkey ~= '' then fq_rate_take('key:' .. fkey) end
  local single = hget(key, 'singleton_key')
  if single then
    local s = FQ .. 'single:' .. single
    redis.call('HSET', s, 'running', id)
    if redis.call('HGET', s, 'waiting') == id then redis.call('HDEL', s, 'waiting') end
  end
end

-- Slot `member` was freed: its key holds one slot fewer, and comes back
-- to the ring if it has work (a claim parks it again if it still cannot
-- be served: cheaper than deciding here).
local function fq_released(member)
  local fkey = redis.call('HGET', FQ .. 'in_flight_key', member)
  if not fkey then return end
  redis.call('HDEL', FQ .. 'in_flight_key', member)
  if redis.call('HINCRBY', FQ .. 'in_flight_keys', fkey, -1) <= 0 then
    redis.call('HDEL', FQ .. 'in_flight_keys', fkey)
  end
  if redis.call('ZCARD', fq_queue(fkey)) > 0 then fq_join_ring(fkey) end
end

-- Ends a job that never ran: a cancel, and a singleton replaced by a
-- newer job.
-- Takes a job that never ran (queued, scheduled or waiting) out of
-- whichever queue holds it, before it ends: cancelled, expired, or a
-- singleton replaced by a newer job.
local function leave_queue(id, key, status)
  if status == 'queued' then
    redis.call('ZREM', P .. 'queue', id)
    redis.call('ZREM', fq_queue(hget(key, 'concurrency_key') or ''), id)
  else
    redis.call('ZREM', P .. 'scheduled', id)
  end
  -- A `waiting` job (fan_in.lua) sits in neither queue: only its count
  -- of what it waits on goes.
  redis.call('HDEL', key, 'run_at', 'waiting_on', 'not_before')
end

local function cancel_waiting(id, key, status, error)
  leave_queue(id, key, status)
  redis.call('HSET', key, 'error', error)
  finish(id, key, status, 'cancelled')
end

-- Singleton keys (`fq:single:{key}`: `waiting`, the job that has not run
-- yet; `running`, the last one claimed). Both are read lazily, by the
-- job's status, so no other transition keeps them. They expire a month
-- after their last use.
local SINGLE_TTL_MS = 30 * 24 * 3600 * 1000

local function fq_single_waiting(single)
  local id = redis.call('HGET', FQ .. 'single:' .. single, 'waiting')
  if not id then return nil end
  local status = hget(job_key(id), 'status')
  if status == 'queued' or status == 'scheduled' then return id, status end
  return nil
end

-- Before a job under a singleton key is stored. `flow` is the submit's
-- flow options. Answers the id of the job the submit joins instead of
-- creating one (keep; a debounce still open, whose params and run time
-- it updates), or nil to go on (replace and cancel_running have then
-- ended the waiting job, and cancel_running asked the running one to
-- stop).
local function fq_singleton_admit(flow, params)
  local single = flow.singleton_key
  if not single then return nil end
  local waiting, status = fq_single_waiting(single)
  if flow.debounce_ms then
    local key = waiting and job_key(waiting)
    if waiting and status == 'scheduled' and hget(key, 'debounce') == '1' then
      redis.call('HSET', key, 'params', params, 'updated_at', int(NOW))
      redis.call('HSET', key, 'run_at', int(NOW + flow.debounce_ms))
      redis.call('ZADD', P .. 'scheduled', int(NOW + flow.debounce_ms), waiting)
      return waiting
    end
    return nil
  end
  if waiting and flow.singleton_policy == 'keep' then return waiting end
  if waiting then
    cancel_waiting(waiting, job_key(waiting), status,
      'replaced by a newer job under singleton key ' .. single)
  end
  if flow.singleton_policy == 'cancel_running' then
    local running = redis.call('HGET', FQ .. 'single:' .. single, 'running')
    local key = running and job_key(running)
    local status = key and hget(key, 'status')
    if (status == 'starting' or status == 'running') and not hget(key, 'cancel_requested') then
      redis.call('HSET', key, 'cancel_requested', '1')
      publish({ id = running, type = 'cancel', attempt = tonumber(hget(key, 'attempt')) })
    end
  end
  return nil
end

-- After the job `id` was stored under its singleton key.
local function fq_singleton_stored(flow, id)
  if not flow.singleton_key then return end
  local s = FQ .. 'single:' .. flow.singleton_key
  redis.call('HSET', s, 'waiting', id)
  redis.call('PEXPIRE', s, SINGLE_TTL_MS)
end
