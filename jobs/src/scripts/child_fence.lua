-- The fence on what a running job enqueues: a child (enqueue_child.lua,
-- before enqueue.lua) or a batch (submit.lua, `batch.parent`). One check
-- serves both, so a zombie attempt can enqueue neither.
--   parent  the enqueuing job's id
--   fence   {attempt, token}: the attempt that asks
--   index   the hash of the parent's keys (child_keys:{parent} for
--           children, child_batches:{parent} for batches)
--   key     the key within the parent
-- Answers {stale = true} when the parent's attempt is not current (a zombie
-- cannot enqueue), {existing = id} when the parent already enqueued under
-- this key (a retried parent finds it), or nil: go on and store.
local function child_fence(parent, fence, index, key)
  if not is_current(job_key(parent), tostring(fence.attempt), fence.token) then
    return { stale = true }
  end
  local existing = redis.call('HGET', index, key)
  if existing then return { existing = existing } end
  return nil
end
