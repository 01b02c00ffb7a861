-- A dispatcher extends its leases on in-flight attempts, all at once, and
-- learns for each how long ago the runner last showed signs of life
-- (heartbeat, or the claim before the runner started). Answers one number
-- per attempt, in order: -1 when the attempt is no longer this owner's
-- (its slot was released, or another dispatcher took it over: the epoch
-- differs), else that age in milliseconds. A lost lease is not extended.
-- ARGV: prefix, then one JSON argument:
--   { "lease_ms": n, "attempts": [ { "member": "{id}/{attempt}", "epoch": "e" }, ... ] }
local args = cjson.decode(ARGV[2])
local deadline = int(NOW + tonumber(args.lease_ms))
local ages = {}
for _, held in ipairs(args.attempts) do
  local member = held.member
  if not owns(member, held.epoch) or not redis.call('ZSCORE', P .. 'in_flight', member) then
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
