-- A dispatcher shutting down hands an attempt back: its lease expires now,
-- and every dispatcher is told so a peer's reaper takes it over at once.
-- Only the owner can hand it back. Answers 1 when handed back, 0 when the
-- caller no longer owns it.
-- ARGV: prefix, id, attempt, epoch.
local id, attempt, epoch = ARGV[2], ARGV[3], ARGV[4]
local member = member_of(id, attempt)
if not owns(member, epoch) or not redis.call('ZSCORE', P .. 'in_flight', member) then
  return 0
end
redis.call('ZADD', P .. 'in_flight', '0', member)
publish({ id = id, type = 'lease', attempt = tonumber(attempt) })
return 1
