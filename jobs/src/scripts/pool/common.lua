-- Shared by the warm pool's scripts (after prelude.lua). ARGV[2] is one
-- JSON object of named parameters, decoded into A.
--
-- Keys (all under the prefix P):
--   pool_machines           hash  machine id -> JSON record (below)
--   pool:{pool}:members     set   machine ids of the pool (any state)
--   pool:{pool}:ready       zset  stopped, unclaimed machines, scored by
--                                 when they became ready (ms)
--   pool:{pool}:warming     zset  names of machines being created, scored
--                                 by when the reservation expires (ms)
--   pools                   set   every pool key ever used (for stats)
--
-- A record: { pool, image, state = ready|in_use|retiring, since (ms),
--             job_id, attempt, token, booted }. `booted` is set by the
-- runner when it takes the attempt: a machine started twice for one
-- attempt (a dispatcher died between "start" and anything else) runs the
-- job's code at most once.
local A = cjson.decode(ARGV[2])

local MACHINES = P .. 'pool_machines'
local function members_key(pool) return P .. 'pool:' .. pool .. ':members' end
local function ready_key(pool) return P .. 'pool:' .. pool .. ':ready' end
local function warming_key(pool) return P .. 'pool:' .. pool .. ':warming' end

local function record_of(id)
  local text = redis.call('HGET', MACHINES, id)
  if not text then return nil end
  return cjson.decode(text)
end

local function save(id, record)
  record.since = NOW
  redis.call('HSET', MACHINES, id, cjson.encode(record))
end
