-- The per-minute counters and samples the prelude keeps (`count_minute`,
-- `count_queue_wait`, `sample_minute`), for the dashboard's charts,
-- oldest minute first, in one round trip. ARGV[2] `minutes`: how many
-- minutes back, the current (partial) one included.
local minutes = tonumber(ARGV[2])
local current = math.floor(NOW / 60000)
local counters = { 'started', 'succeeded', 'failed', 'cancelled' }
local fields = { 'queue_max', 'in_flight_max' }
for _, counter in ipairs(counters) do fields[#fields + 1] = counter end
local first_wait = #fields + 1
for i = 1, #WAIT_BOUNDS_MS + 1 do fields[#fields + 1] = wait_field(i) end

local counts, load = {}, {}
for m = current - minutes + 1, current do
  local values = redis.call('HMGET', minute_key(m), unpack(fields))
  local minute = {}
  for i, counter in ipairs(counters) do minute[counter] = tonumber(values[i + 2]) or 0 end
  counts[#counts + 1] = minute
  local waits = {}
  for i = first_wait, #fields do waits[#waits + 1] = tonumber(values[i]) or 0 end
  -- An unsampled gauge is left out (nil), not zero: no dispatcher ran.
  load[#load + 1] = {
    queue_depth = tonumber(values[1]),
    in_flight = tonumber(values[2]),
    queue_wait = waits,
  }
end
return cjson.encode({
  first_minute = current - minutes + 1,
  minutes = counts,
  load = load,
  wait_bounds_ms = WAIT_BOUNDS_MS,
})
