-- The per-minute counters `count_minute` keeps, for the dashboard's
-- charts, oldest minute first, in one round trip. ARGV[2] `minutes`: how
-- many minutes back, the current (partial) one included.
local minutes = tonumber(ARGV[2])
local current = math.floor(NOW / 60000)
local fields = { 'started', 'succeeded', 'failed', 'cancelled' }
local counts = {}
for m = current - minutes + 1, current do
  local values = redis.call('HMGET', minute_key(m), unpack(fields))
  local minute = {}
  for i, field in ipairs(fields) do minute[field] = tonumber(values[i]) or 0 end
  counts[#counts + 1] = minute
end
return cjson.encode({ first_minute = current - minutes + 1, minutes = counts })
