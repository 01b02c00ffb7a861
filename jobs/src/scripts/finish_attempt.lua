-- The supervisor closes an attempt and moves the job on: succeeded,
-- cancelled, scheduled for a retry, or failed (dead letter) when attempts
-- are used up or the error is permanent. Returns the new status, or
-- 'stale' when the attempt was not current.
-- ARGV: prefix, id, attempt, token, outcome, exit_code|'', error|'', retry_delay_ms.
local id = ARGV[2]
local key = job_key(id)
if not is_current(key, ARGV[3], ARGV[4]) then return 'stale' end
local from = hget(key, 'status')
local a = 'a:' .. ARGV[3] .. ':'
local outcome = ARGV[5]
redis.call('HSET', key, a .. 'outcome', outcome, a .. 'finished_at', int(NOW))
if ARGV[6] ~= '' then redis.call('HSET', key, a .. 'exit_code', ARGV[6]) end
if ARGV[7] ~= '' and not hget(key, a .. 'error') then
  redis.call('HSET', key, a .. 'error', ARGV[7])
end

if outcome == 'succeeded' then
  local result = hget(key, a .. 'result')
  if result then redis.call('HSET', key, 'result', result) end
  redis.call('HDEL', key, 'error')
  finish(id, key, from, 'succeeded')
  return 'succeeded'
end
redis.call('HSET', key, 'error', hget(key, a .. 'error') or outcome)
if outcome == 'cancelled' then
  finish(id, key, from, 'cancelled')
  return 'cancelled'
end
local used = tonumber(ARGV[3]) - tonumber(hget(key, 'attempt_base'))
if hget(key, a .. 'permanent') == '1' or used >= tonumber(hget(key, 'max_attempts')) then
  finish(id, key, from, 'failed')
  return 'failed'
end
schedule(id, key, from, NOW + tonumber(ARGV[8]))
return 'scheduled'
