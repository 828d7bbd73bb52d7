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
local ids, values, old = {}, {}, 0
while #ids < limit do
  local popped = CALL('ZPOPMIN', R, limit - #ids)
  if #popped == 0 then break end
  local got = {}
  for i = 1, #popped, 2 do got[#got + 1] = popped[i] end
  local vs = CALL('HMGET', B, unpack(got))
  for i = 1, #got do
    if passed(vs[i], now, a.ret) or not vs[i] then
      drop(got[i])  -- past its retention: dropped where a receive meets it
      if vs[i] then old = old + 1 end
    else
      ids[#ids + 1] = got[i]
      values[#values + 1] = vs[i]
    end
  end
end
count_retention(old)
if #ids == 0 then
  -- Tell publishers someone may be waiting (long polls park after an empty receive).
  CALL('SET', W, '1', 'PX', 25000)
  return {'{"messages":[]}', MOVES}
end
if promoted > #ids and CALL('EXISTS', W) == 1 then CALL('SPUBLISH', CH, '1') end
local deadline = now + vis
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
return {answer(ids, values, counts), MOVES}
