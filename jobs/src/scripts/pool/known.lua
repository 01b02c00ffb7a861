-- The sweeper's question: which of these machines does a pool own or is
-- creating? A: machines = [{ id, name, pool }]. Returns 1/0 per machine.
local answer = {}
for i, m in ipairs(A.machines) do
  -- A reservation counts while it lasts: after it lapses, a machine
  -- still carrying its name was left by a creator that died.
  local reserved_until = redis.call('ZSCORE', warming_key(m.pool), m.name)
  local known = redis.call('HEXISTS', MACHINES, m.id) == 1
    or (reserved_until ~= false and tonumber(reserved_until) > NOW)
  answer[i] = known and 1 or 0
end
return answer
