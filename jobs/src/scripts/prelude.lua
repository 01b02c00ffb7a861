-- Shared by every script. KEYS[1] is the key prefix, "{namespace}:".
-- Every key starts with it, so all keys share one hash slot; declaring it
-- lets a cluster client route the script to the node that owns that slot.
-- ARGV[1] repeats it, so each script's own arguments start at ARGV[2].
local P = KEYS[1]

-- Integers are passed to Valkey as "%d" text: Lua's default number
-- formatting would turn large ones into exponent notation.
local function int(n) return string.format('%d', n) end

-- The server's clock is the only clock: dispatchers may disagree.
local time = redis.call('TIME')
local NOW = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

-- Every key a script names is built here, once (the key layout is in
-- store.rs's module doc).
local function job_key(id) return P .. 'job:' .. id end
local function secrets_key(id) return P .. 'secrets:' .. id end
local function kind_key(kind) return P .. 'kind:' .. kind end
local function idempotency_key(k) return P .. 'idempotency:' .. k end
local function log_key(id, attempt) return P .. 'log:' .. id .. ':' .. attempt end
local function minute_key(minute) return P .. 'minute:' .. int(minute) end
local function status_key(status, kind)
  if kind then return P .. 'status:' .. status .. ':' .. kind end
  return P .. 'status:' .. status
end

-- An idempotency record, "{id} {request hash}" under `rkey` (a job's
-- key: `idempotency_key`, a batch's: `batch_idempotency:`): the id stored
-- first and whether `hash` is the same request; nil when unused.
local function idempotency_seen(rkey, hash)
  local stored = redis.call('GET', rkey)
  if not stored then return nil end
  local first, stored_hash = string.match(stored, '^([^ ]+) (.*)$')
  return first, stored_hash == hash
end

local function idempotency_remember(rkey, id, hash, ttl_ms)
  redis.call('SET', rkey, id .. ' ' .. hash, 'PX', int(ttl_ms))
end

-- An in-flight attempt's slot, a member of `in_flight`: "{id}/{attempt}"
-- (store.rs's `member` and `parse_member` are the Rust side).
local function member_of(id, attempt) return id .. '/' .. attempt end
-- The job id and attempt number (text) of a member; nil for another form.
local function parse_member(member) return string.match(member, '^(.+)/(%d+)$') end

local function hget(key, field)
  local v = redis.call('HGET', key, field)
  if v == false then return nil end
  return v
end

local function hgetall(key)
  local flat = redis.call('HGETALL', key)
  local map = {}
  for i = 1, #flat, 2 do map[flat[i]] = flat[i + 1] end
  return map
end

local function publish(event)
  redis.call('PUBLISH', P .. 'events', cjson.encode(event))
end

-- Listing indexes are sorted sets with score 0, ordered by member: job
-- ids are UUIDv7, so that order is creation order and a page cursor is
-- simply the last id seen.
local function status_indexes(key, status)
  return status_key(status), status_key(status, hget(key, 'kind'))
end

-- The job state machine, whole: for each status, the statuses a job may
-- move to from it ('' is a job not stored yet). `set_status` refuses any
-- other pair, so a script cannot invent an edge. docs/state-machine.md
-- draws it with the script and caller of every edge; `JobStatus::successors`
-- mirrors it in Rust, and a store test keeps the two equal.
local TRANSITIONS = {
  [''] = { queued = true, scheduled = true, waiting = true },
  waiting = { queued = true, scheduled = true, cancelled = true, expired = true },
  scheduled = { queued = true, cancelled = true, expired = true },
  queued = { starting = true, cancelled = true, expired = true },
  starting = { running = true, scheduled = true, succeeded = true, failed = true, cancelled = true },
  running = { scheduled = true, succeeded = true, failed = true, cancelled = true },
  succeeded = {},
  failed = { queued = true },
  cancelled = { queued = true },
  expired = { queued = true },
}

-- Raises an error reply (the script stops there) unless `from` -> `to` is
-- in TRANSITIONS. `set_status` and the helpers below that lead to it check
-- before their first write: an error does not roll a script back.
local function check_transition(id, from, to)
  local allowed = TRANSITIONS[from or '']
  if not (allowed and allowed[to]) then
    error(redis.error_reply('TRANSITION job ' .. id .. ': ' .. tostring(from or 'new')
      .. ' -> ' .. tostring(to) .. ' is not in the job state machine'))
  end
end

-- Called after every status change, with (id, key, from, to): where
-- other bookkeeping follows a job's status in the same script (batch
-- counters and dependencies, `fan_in.lua`). `quiet` leaves out the
-- per-job event, for a script that stores many jobs and announces them
-- once.
local status_listeners = {}
local quiet = false

-- The one place where a job's status changes: it keeps the per-status
-- indexes right and tells every listener.
local function set_status(id, key, from, to)
  check_transition(id, from, to)
  redis.call('HSET', key, 'status', to, 'updated_at', int(NOW))
  if from then
    local by_status, by_status_kind = status_indexes(key, from)
    redis.call('ZREM', by_status, id)
    redis.call('ZREM', by_status_kind, id)
  end
  local by_status, by_status_kind = status_indexes(key, to)
  redis.call('ZADD', by_status, 0, id)
  redis.call('ZADD', by_status_kind, 0, id)
  if not quiet then
    publish({ id = id, type = 'status', status = to, attempt = tonumber(hget(key, 'attempt')) })
  end
  for _, listener in ipairs(status_listeners) do listener(id, key, from, to) end
end

-- Lower priority runs first; within a priority, first in first out.
-- `kinds` remembers every kind that was ever queued, for the per-kind
-- queue depths of /metrics (jobs stored before it existed join on their
-- next trip through the queue).
--
-- Flow control (flow.lua, docs/flow-control.md): the job also joins its
-- concurrency key's own queue (`fq:q:{key}`, '' for jobs without a key),
-- and the key joins the back of the ring of keys with work unless it is
-- in it already. The claim serves the ring round-robin.
local function fq_join_ring(fkey)
  redis.call('ZADD', P .. 'fq:ring', 'NX', redis.call('INCR', P .. 'fq:turn'), fkey)
end

local function push_queue(id, key, from)
  check_transition(id, from, 'queued')
  redis.call('SADD', P .. 'kinds', hget(key, 'kind'))
  redis.call('HSET', key, 'queued_at', int(NOW))
  local seq = redis.call('INCR', P .. 'seq')
  local score = (tonumber(hget(key, 'priority')) + 1000) * 1e12 + seq
  redis.call('ZADD', P .. 'queue', int(score), id)
  local fkey = hget(key, 'concurrency_key') or ''
  redis.call('ZADD', P .. 'fq:q:' .. fkey, int(score), id)
  fq_join_ring(fkey)
  set_status(id, key, from, 'queued')
end

local function schedule(id, key, from, at)
  check_transition(id, from, 'scheduled')
  redis.call('HSET', key, 'run_at', int(at))
  redis.call('ZADD', P .. 'scheduled', int(at), id)
  set_status(id, key, from, 'scheduled')
end

-- Per-minute counters for the dashboard's charts of the last hour
-- (`activity.lua` reads them): one hash per minute of the server's clock,
-- a field per event ('started', 'succeeded', 'failed', 'cancelled'). Each
-- expires two hours after its last write, so at most ~121 exist.
local MINUTE_TTL_SECS = 7200
local function count_minute(event)
  local bucket = minute_key(math.floor(NOW / 60000))
  redis.call('HINCRBY', bucket, event, 1)
  redis.call('EXPIRE', bucket, MINUTE_TTL_SECS)
end

-- The minute's queue wait (from entering the queue, `queued_at`, to the
-- claim) as counts in fixed buckets, fields `wait_le_<ms>` and
-- `wait_le_inf`: a bounded histogram the charts read p50/p95 from, the
-- same size whatever the number of jobs. Upper bounds in milliseconds.
local WAIT_BOUNDS_MS = { 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 900000 }
local function wait_field(i)
  local bound = WAIT_BOUNDS_MS[i]
  if bound then return 'wait_le_' .. int(bound) end
  return 'wait_le_inf'
end
local function count_queue_wait(key)
  local since = tonumber(hget(key, 'queued_at') or '')
  if not since then return end
  local i = 1
  while WAIT_BOUNDS_MS[i] and NOW - since > WAIT_BOUNDS_MS[i] do i = i + 1 end
  count_minute(wait_field(i))
end

-- The queue's depth and the machines in flight, kept per minute as the
-- highest seen (`queue_max`, `in_flight_max`). Every claim samples them,
-- and each dispatcher's launcher claims at least once a second, idle or
-- full, so any running dispatcher fills every minute; several keep the max.
local function sample_minute()
  local bucket = minute_key(math.floor(NOW / 60000))
  local now = { redis.call('ZCARD', P .. 'queue'), redis.call('ZCARD', P .. 'in_flight') }
  local seen = redis.call('HMGET', bucket, 'queue_max', 'in_flight_max')
  for i, field in ipairs({ 'queue_max', 'in_flight_max' }) do
    if now[i] > (tonumber(seen[i]) or -1) then redis.call('HSET', bucket, field, now[i]) end
  end
  redis.call('EXPIRE', bucket, MINUTE_TTL_SECS)
end

-- Terminal jobs are indexed by when they finished, so `purge` can remove
-- them once their retention has passed.
-- A finished job's secrets are deleted: nothing will read them again.
local function finish(id, key, from, to)
  check_transition(id, from, to)
  count_minute(to)
  redis.call('DEL', secrets_key(id))
  redis.call('HSET', key, 'finished_at', int(NOW))
  redis.call('ZADD', P .. 'finished', int(NOW), id)
  set_status(id, key, from, to)
end

-- Fencing between dispatchers. Every change of ownership of an in-flight
-- attempt (its claim, each takeover) issues a new epoch, kept beside the
-- slot in `in_flight_epoch`, and every write a dispatcher makes for the
-- attempt carries the epoch it was handed. A dispatcher paused past its
-- lease and taken over still holds the old one, so whatever it tries when
-- it wakes is refused: the attempt's number and token alone cannot tell
-- it from the new owner, since a takeover keeps both (the runner on the
-- machine holds them).
local function new_epoch(member)
  local epoch = redis.call('INCR', P .. 'epochs')
  redis.call('HSET', P .. 'in_flight_epoch', member, epoch)
  return epoch
end

local function owns(member, epoch)
  return redis.call('HGET', P .. 'in_flight_epoch', member) == epoch
end

-- An attempt is current while its number and token are the job's and the
-- job is still on a machine. Everything a runner or supervisor writes is
-- fenced by this, so a zombie attempt can never overwrite a newer one.
local function is_current(key, attempt, token)
  local status = hget(key, 'status')
  return hget(key, 'attempt') == attempt and hget(key, 'token') == token
    and (status == 'starting' or status == 'running')
end
