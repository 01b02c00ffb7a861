-- The sweeper's question: which of these machines does a pool own or is
-- creating? A: machines = [{ id, name, pool }]. Returns 1/0 per machine.
local answer = {}
for i, m in ipairs(A.machines) do
  local known = redis.call('HEXISTS', MACHINES, m.id) == 1
    or redis.call('ZSCORE', warming_key(m.pool), m.name) ~= false
  answer[i] = known and 1 or 0
end
return answer
