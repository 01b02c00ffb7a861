-- The supervisor closes an attempt and moves the job on: succeeded,
-- cancelled, scheduled for a retry, or failed (dead letter) when attempts
-- are used up or the error is permanent. Returns JSON `{status, log}`:
-- the new status and the attempt's log summary (`LogSummary`, so the
-- supervisor counts log metrics without another round trip); 'stale'
-- when the attempt was not current, or 'lost' when the caller no longer
-- owns it (another dispatcher took it over: that one finishes it).
--
-- A cancel is stored state: once requested, an attempt that did not
-- succeed ends `cancelled`, however its runner ended (a runner stopped by
-- the cancel reports a retryable error, and an owner that took the
-- attempt over may never have seen the cancel message), and the job gets
-- no other attempt. A success that raced the cancel stands: the work is
-- done.
-- ARGV: prefix, id, attempt, token, epoch, outcome, exit_code|'', error|'', retry_delay_ms.
local id, attempt, token, epoch = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local outcome, exit_code, error, retry_delay_ms = ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9])
if not owns(member_of(id, attempt), epoch) then return 'lost' end
local key = job_key(id)
if not is_current(key, attempt, token) then return 'stale' end
local from = hget(key, 'status')
local a = 'a:' .. attempt .. ':'
local function answer(status)
  local log = redis.call('HMGET', key, a .. 'log_lines', a .. 'log_bytes', a .. 'log_truncated',
    a .. 'log_dropped', a .. 'log_batches')
  return cjson.encode({ status = status, log = {
    lines = tonumber(log[1]) or 0, bytes = tonumber(log[2]) or 0, truncated = log[3] == '1',
    dropped = tonumber(log[4]) or 0, batches = tonumber(log[5]) or 0,
  } })
end
if outcome ~= 'succeeded' and outcome ~= 'cancelled' and hget(key, 'cancel_requested') then
  -- What the runner or supervisor said of the end stays the error.
  if error == '' then error = 'cancelled by request (the attempt ended ' .. outcome .. ')' end
  outcome = 'cancelled'
end
redis.call('HSET', key, a .. 'outcome', outcome, a .. 'finished_at', int(NOW))
if exit_code ~= '' then redis.call('HSET', key, a .. 'exit_code', exit_code) end
if error ~= '' and not hget(key, a .. 'error') then
  redis.call('HSET', key, a .. 'error', error)
end

if outcome == 'succeeded' then
  local result = hget(key, a .. 'result')
  if result then redis.call('HSET', key, 'result', result) end
  redis.call('HDEL', key, 'error')
  finish(id, key, from, 'succeeded')
  return answer('succeeded')
end
redis.call('HSET', key, 'error', hget(key, a .. 'error') or outcome)
if outcome == 'cancelled' then
  finish(id, key, from, 'cancelled')
  return answer('cancelled')
end
local used = tonumber(attempt) - tonumber(hget(key, 'attempt_base'))
if hget(key, a .. 'permanent') == '1' or used >= tonumber(hget(key, 'max_attempts')) then
  finish(id, key, from, 'failed')
  return answer('failed')
end
if outcome == 'oom' then oom_step_up(key, a) end
schedule(id, key, from, NOW + retry_delay_ms)
return answer('scheduled')
