-- What the store can say about the whole queue in one round trip, for
-- /metrics and the dashboard. ARGV: prefix, then every status name.
-- Counts come from the indexes the transitions keep; nothing is scanned.
local by_status = {}
for i = 2, #ARGV do
  by_status[ARGV[i]] = redis.call('ZCARD', status_key(ARGV[i]))
end
local queued_by_kind = {}
for _, kind in ipairs(redis.call('SMEMBERS', P .. 'kinds')) do
  queued_by_kind[kind] = redis.call('ZCARD', status_key('queued', kind))
end
return cjson.encode({
  by_status = by_status,
  queued_by_kind = queued_by_kind,
  in_flight = redis.call('ZCARD', P .. 'in_flight'),
  finished_last_hour = redis.call('ZCOUNT', P .. 'finished', NOW - 3600000, '+inf'),
})
