-- A dispatcher shutting down hands an attempt back: its lease expires now,
-- and every dispatcher is told so a peer's reaper takes it over at once.
-- Only the owner can hand it back. Answers 1 when handed back, 0 when the
-- caller no longer owns it.
-- ARGV: prefix, id, attempt, epoch.
local member = member_of(ARGV[2], ARGV[3])
if not owns(member, ARGV[4]) or not redis.call('ZSCORE', P .. 'in_flight', member) then
  return 0
end
redis.call('ZADD', P .. 'in_flight', '0', member)
publish({ id = ARGV[2], type = 'lease', attempt = tonumber(ARGV[3]) })
return 1
