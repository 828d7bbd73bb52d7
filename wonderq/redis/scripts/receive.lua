#!lua flags=allow-oom
-- Lease up to limit available messages, lowest ids first, after making due leases and
-- delays available (lazy expiry: correctness never waits for the sweeper).
-- ARGV: slot, cid, limit, visibility_ms (-1 = the queue's). Returns {answer, dead-letter moves}.
-- ARGV: slot, '*k', then k x (cid, limit, visibility_ms): the k receives of one event-loop
-- turn, served one after the other as k calls would be. Returns {moves, answer...}.
if not attrs().mmb then exists() end  -- every queue's attributes have mmb
local now = clock()
local asks, total = {}, 0
local several = string.sub(ARGV[2], 1, 1) == '*'
if several then
  for j = 0, tonumber(string.sub(ARGV[2], 2)) - 1 do
    local limit = tonumber(ARGV[4 + 3 * j])
    asks[j + 1] = {ARGV[3 + 3 * j], limit, tonumber(ARGV[5 + 3 * j])}
    total = total + limit
  end
else
  total = tonumber(ARGV[3])
  asks[1] = {ARGV[2], total, tonumber(ARGV[4])}
end
local promoted = promote(now, math.max(1000, total))
local a = attrs()
-- All the messages at once, lowest ids first: the first receive gets the first ones.
local ids, values = take_ready(now, total, a)
if #ids == 0 then
  -- Tell publishers someone may be waiting (long polls park after an empty receive).
  CALL('SET', W, '1', 'PX', '25000')
  if not several then return {'{"messages":[]}', MOVES} end
  local out = {MOVES}
  for j = 1, #asks do out[j + 1] = '{"messages":[]}' end
  return out
end
if promoted > #ids and CALL('EXISTS', W) == 1 then CALL('SPUBLISH', CH, '1') end
if not several then
  local vis = asks[1][3]
  if vis < 0 then vis = a.vis end
  local counts, texts = lease_to(ids, asks[1][1], now + vis)
  return {answer(ids, values, counts, texts), MOVES}
end
local cids, deadlines, first, last = {}, {}, {}, {}
local k = 0
for j = 1, #asks do
  local cid, limit, vis = asks[j][1], asks[j][2], asks[j][3]
  if vis < 0 then vis = a.vis end
  local dl = string.format('%d', now + vis)
  first[j] = k + 1
  for _ = 1, limit do
    if k == #ids then break end
    k = k + 1
    cids[k] = cid
    deadlines[k] = dl
  end
  last[j] = k
end
local counts, texts = lease_to(ids, cids, deadlines)
local out, empty = {MOVES}, false
for j = 1, #asks do
  if last[j] < first[j] then
    out[j + 1] = '{"messages":[]}'
    empty = true
  else
    out[j + 1] = answer({unpack(ids, first[j], last[j])}, {unpack(values, first[j], last[j])},
                        nil, {unpack(texts, first[j], last[j])})
  end
end
if empty then CALL('SET', W, '1', 'PX', '25000') end
return out
