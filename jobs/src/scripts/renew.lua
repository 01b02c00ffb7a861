-- A dispatcher extends its leases on in-flight attempts, all at once, and
-- learns for each how long ago the runner last showed signs of life
-- (heartbeat, or the claim before the runner started). Answers one number
-- per attempt, in order: -1 when the slot is gone (released, or taken
-- over by another dispatcher), else that age in milliseconds.
-- ARGV: prefix, lease_ms, then one "{id}/{attempt}" member per attempt.
local deadline = int(NOW + tonumber(ARGV[2]))
local ages = {}
for i = 3, #ARGV do
  local member = ARGV[i]
  if not redis.call('ZSCORE', P .. 'in_flight', member) then
    ages[#ages + 1] = -1
  else
    redis.call('ZADD', P .. 'in_flight', deadline, member)
    local id, attempt = string.match(member, '^(.+)/(%d+)$')
    local a = 'a:' .. attempt .. ':'
    local key = job_key(id)
    local alive = hget(key, a .. 'heartbeat_at') or hget(key, a .. 'claimed_at') or int(NOW)
    ages[#ages + 1] = NOW - tonumber(alive)
  end
end
return ages
