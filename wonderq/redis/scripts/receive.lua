#!lua flags=allow-oom
-- Lease up to limit available messages, lowest ids first, after making due leases and
-- delays available (lazy expiry: correctness never waits for the sweeper).
-- ARGV: slot, cid, limit, visibility_ms (-1 = the queue's). Returns {answer, dead-letter moves}.
exists()
local now = clock()
local cid, limit, vis = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local promoted = promote(now, math.max(1000, limit))
local a = attrs()
if vis < 0 then vis = a.vis end
local ids = {}
while #ids < limit do
  local popped = CALL('ZPOPMIN', R, limit - #ids)
  if #popped == 0 then break end
  for i = 1, #popped, 2 do
    local id = popped[i]
    if a.ret ~= nil and too_old(id, now) then drop(id) else ids[#ids + 1] = id end
  end
end
if #ids == 0 then
  -- Tell publishers someone may be waiting (long polls park after an empty receive).
  CALL('SET', W, '1', 'PX', 25000)
  return {'{"messages":[]}', MOVES}
end
if promoted > #ids and CALL('EXISTS', W) == 1 then CALL('SPUBLISH', CH, '1') end
local deadline = now + vis
local bodies = CALL('HMGET', B, unpack(ids))
local states = CALL('HMGET', S, unpack(ids))
local counts, hs, zl = {}, {}, {}
for i = 1, #ids do
  local rc = receives_of(states[i]) + 1
  counts[i] = rc
  hs[2 * i - 1] = ids[i]
  hs[2 * i] = string.format('%d', rc) .. ':' .. cid
  zl[2 * i - 1] = deadline
  zl[2 * i] = ids[i]
end
many('HSET', S, hs, 2)
many('ZADD', L, zl, 2)
CALL('HINCRBY', T, 'delivered', #ids)
return {answer(ids, bodies, counts), MOVES}
