-- Runs before enqueue.lua when a running job enqueues a child. ARGV[3]
-- `fence` (JSON): the parent's `attempt` and `token`; the child's parent
-- and key are in enqueue.lua's argument (ARGV[2]), as `run.child_of`.
-- Answers {stale = true} when the parent's attempt is not current (a
-- zombie cannot enqueue), {existing = id} when the parent already has a
-- child under this key (a retried parent finds it); otherwise enqueue.lua
-- stores the child.
do
  local fence = cjson.decode(ARGV[3])
  local child_of = cjson.decode(ARGV[2]).run.child_of
  local parent_key = job_key(child_of.parent)
  if not is_current(parent_key, tostring(fence.attempt), fence.token) then
    return cjson.encode({ stale = true })
  end
  local existing = redis.call('HGET', child_keys_key(child_of.parent), child_of.key)
  if existing then return cjson.encode({ existing = existing }) end
end
