-- The runner on a pooled machine asks which attempt it runs. The answer
-- is given once per claim: a second boot for the same claim gets nil and
-- exits at once, as does a machine booted while ready (its first boot).
-- A: machine_id. Returns { job_id, attempt, token } as JSON, or nil.
local record = record_of(A.machine_id)
if not record or record.state ~= 'in_use' or record.booted then return nil end
record.booted = true
save(A.machine_id, record)
if not is_current(job_key(record.job_id), record.attempt, record.token) then return nil end
return cjson.encode({ job_id = record.job_id, attempt = record.attempt, token = record.token })
