-- Moves a schedule from the tick just fired to its next one, only if no
-- one did so already (compare and set on the due time). Returns 1 when
-- this caller advanced it.
-- ARGV: prefix, schedule id, due_ms (the tick fired), next_ms, last job id.
local schedule_id, due_ms, next_ms, job_id = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local due = redis.call('ZSCORE', P .. 'schedules_due', schedule_id)
if not due or tonumber(due) ~= tonumber(due_ms) then return 0 end
redis.call('ZADD', P .. 'schedules_due', next_ms, schedule_id)
redis.call('HSET', P .. 'schedule_runs', schedule_id, job_id .. ' ' .. due_ms)
return 1
