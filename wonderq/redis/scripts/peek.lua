#!lua flags=allow-oom
-- The next available messages, leasing and counting nothing (due leases and delays are
-- made available first, as a receive would). ARGV: slot, limit. Returns {answer, moves}.
exists()
local now = clock()
local limit = tonumber(ARGV[2])
promote(now, math.max(1000, limit))
local ids, values, old, start = {}, {}, 0, 0
local ret = attrs().ret
while #ids < limit do
  local got = CALL('ZRANGE', R, start, start + limit - #ids - 1)
  if #got == 0 then break end
  local vs = CALL('HMGET', B, unpack(got))
  for i = 1, #got do
    if passed(vs[i], now, ret) or not vs[i] then
      CALL('ZREM', R, got[i])  -- past its retention: dropped where a peek meets it
      drop(got[i])
      if vs[i] then old = old + 1 end
    else
      ids[#ids + 1] = got[i]
      values[#values + 1] = vs[i]
      start = start + 1
    end
  end
end
count_retention(old)
if #ids == 0 then return {'{"messages":[]}', MOVES} end
local states = CALL('HMGET', S, unpack(ids))
local counts = {}
for i = 1, #ids do counts[i] = receives_of(states[i]) end
return {answer(ids, values, counts), MOVES}
