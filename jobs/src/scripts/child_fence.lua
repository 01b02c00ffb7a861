-- Runs before enqueue.lua when a running job enqueues a child. ARGV[17]
-- `fence` (JSON): the parent's `attempt` and `token`; the child's parent
-- and key are in ARGV[16] `run_options.child_of`.
-- Answers {stale = true} when the parent's attempt is not current (a
-- zombie cannot enqueue), {existing = id} when the parent already has a
-- child under this key (a retried parent finds it); otherwise enqueue.lua
-- stores the child.
do
  local fence = cjson.decode(ARGV[17])
  local child_of = cjson.decode(ARGV[16]).child_of
  local parent_key = job_key(child_of.parent)
  if not is_current(parent_key, tostring(fence.attempt), fence.token) then
    return cjson.encode({ stale = true })
  end
  local existing = redis.call('HGET', child_keys_key(child_of.parent), child_of.key)
  if existing then return cjson.encode({ existing = existing }) end
end
