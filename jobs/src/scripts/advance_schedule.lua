-- Moves a schedule from the tick just fired to its next one, only if no
-- one did so already (compare and set on the due time). Returns 1 when
-- this caller advanced it.
-- ARGV: prefix, schedule id, due_ms (the tick fired), next_ms, last job id.
local due = redis.call('ZSCORE', P .. 'schedules_due', ARGV[2])
if not due or tonumber(due) ~= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', P .. 'schedules_due', ARGV[4], ARGV[2])
redis.call('HSET', P .. 'schedule_runs', ARGV[2], ARGV[5] .. ' ' .. ARGV[3])
return 1
