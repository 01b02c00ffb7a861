-- The runner ships one batch of an attempt's log lines.
-- ARGV[2]: JSON of the named params (`AppendParams` in logs.rs):
--   id, attempt, token: the attempt, fenced by its token (a zombie
--     attempt can append nothing once a newer one is claimed, nor after
--     its job was purged, so no key is ever re-created);
--   max_bytes: the attempt's cap, counted over the stored entries;
--   dropped: lines the runner dropped so far (cumulative);
--   tail_lines, tail_chars: how much of the end to keep on the record.
-- ARGV[3..]: the entries, each one JSON object (`LogLine`).
-- Returns JSON: {stale = true} | {truncated = bool}.
local args = cjson.decode(ARGV[2])
local id = args.id
local key = job_key(id)
local n = tostring(args.attempt)
if hget(key, 'attempt') ~= n or hget(key, 'token') ~= args.token then
  return cjson.encode({ stale = true })
end
local a = 'a:' .. n .. ':'
local log = log_key(id, n)
redis.call('HINCRBY', key, a .. 'log_batches', 1)
redis.call('HSET', key, a .. 'log_dropped', int(args.dropped))
if hget(key, a .. 'log_truncated') then
  return cjson.encode({ truncated = true })
end

local bytes = tonumber(hget(key, a .. 'log_bytes') or '0')
-- ARGV[3..last] fit under the cap. They are pushed straight from ARGV:
-- a batch holds tens of thousands of lines, and copying them into a
-- table first doubled the script's work.
local last = 2
local truncated = false
for i = 3, #ARGV do
  local size = #ARGV[i]
  if bytes + size > args.max_bytes then
    truncated = true
    break
  end
  bytes = bytes + size
  last = i
end
-- RPUSH in slices: unpack() of a long range would overflow Lua's stack.
for from = 3, last, 1000 do
  redis.call('RPUSH', log, unpack(ARGV, from, math.min(from + 999, last)))
end
local pushed = last - 2
if truncated then
  redis.call('RPUSH', log, cjson.encode({
    ts = NOW, stream = 'system',
    line = 'log truncated: the attempt reached its cap of ' .. int(args.max_bytes) .. ' bytes; later lines are not kept',
  }))
  pushed = pushed + 1
  redis.call('HSET', key, a .. 'log_truncated', '1')
end
redis.call('HSET', key, a .. 'log_bytes', int(bytes))
redis.call('HINCRBY', key, a .. 'log_lines', pushed)

-- The end of the log rides on the record, so the job view, the dead
-- letter and the callback body show it without another read.
local tail = {}
for _, entry in ipairs(redis.call('LRANGE', log, -args.tail_lines, -1)) do
  local line = cjson.decode(entry)
  if #line.line > args.tail_chars then
    -- Cut on a character boundary: the record must stay valid UTF-8.
    local cut = args.tail_chars
    local b = string.byte(line.line, cut + 1)
    while cut > 0 and b >= 128 and b < 192 do
      cut = cut - 1
      b = string.byte(line.line, cut + 1)
    end
    line.line = string.sub(line.line, 1, cut) .. '…'
  end
  tail[#tail + 1] = cjson.encode(line)
end
redis.call('HSET', key, a .. 'log_tail', '[' .. table.concat(tail, ',') .. ']')
return cjson.encode({ truncated = truncated })
