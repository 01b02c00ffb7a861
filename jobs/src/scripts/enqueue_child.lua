-- Runs before enqueue.lua when a running job enqueues a child. ARGV[3]
-- `fence` (JSON): the parent's `attempt` and `token`; the child's parent
-- and key are in enqueue.lua's argument (ARGV[2]), as `run.child_of`.
-- Answers as child_fence.lua does when the child is not to be stored;
-- otherwise enqueue.lua stores it.
do
  local child_of = cjson.decode(ARGV[2]).run.child_of
  local refused = child_fence(child_of.parent, cjson.decode(ARGV[3]),
    child_keys_key(child_of.parent), child_of.key)
  if refused then return cjson.encode(refused) end
end
