-- The supervisor extends its lease on an in-flight attempt.
-- Returns 0 when the slot is gone (released, or taken over).
-- ARGV: prefix, id, attempt, lease_ms.
local member = ARGV[2] .. '/' .. ARGV[3]
if not redis.call('ZSCORE', P .. 'in_flight', member) then return 0 end
redis.call('ZADD', P .. 'in_flight', int(NOW + tonumber(ARGV[4])), member)
return 1
