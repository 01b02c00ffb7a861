-- An attempt on a pooled machine is over and its machine is stopped.
-- A: machine_id, job_id, attempt, image (the current one), target,
-- clean (whether the runner reported and exited by itself).
-- Returns 'ready' (back in the pool), 'retire' (the caller destroys it,
-- then forgets it) or 'unknown' (not bound to this attempt: leave it).
local record = record_of(A.machine_id)
if not record or record.state ~= 'in_use' or record.job_id ~= A.job_id
  or tostring(record.attempt) ~= tostring(A.attempt) then
  return 'unknown'
end
local pool = record.pool
record.job_id, record.attempt, record.token, record.booted = nil, nil, nil, nil
local surplus = redis.call('SCARD', members_key(pool)) > tonumber(A.target)
if A.clean and record.image == A.image and not surplus then
  record.state = 'ready'
  save(A.machine_id, record)
  redis.call('ZADD', ready_key(pool), int(NOW), A.machine_id)
  return 'ready'
end
record.state = 'retiring'
save(A.machine_id, record)
return 'retire'
