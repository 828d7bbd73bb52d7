#!lua flags=allow-oom
-- The SQS face's receive: lease as receive.lua does (to the SQS face's cid) and answer rows
-- with what SQS shows: the publish time (stored with the body), the first SQS receive (set
-- now if none is stored: a message first received through WonderQ's own API has none) and
-- the attribute blob. ARGV: slot, cid, limit, visibility_ms (-1 = the queue's).
-- Returns {flat rows of (id, 'sent|escaped body', receives, first receive, blob or false),
-- dead-letter moves}.
exists()
local now = clock()
local cid, limit, vis = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local promoted = promote(now, math.max(1000, limit))
local a = attrs()
if vis < 0 then vis = a.vis end
local ids, values = take_ready(now, limit, a)
if #ids == 0 then
  CALL('SET', W, '1', 'PX', 25000)  -- long polls park after an empty receive
  return {{}, MOVES}
end
if promoted > #ids and CALL('EXISTS', W) == 1 then CALL('SPUBLISH', CH, '1') end
local counts = lease_to(ids, cid, now + vis)
local ex = {}
if has_extras() then
  local fields = {}
  for i = 1, #ids do
    fields[2 * i - 1] = ids[i]
    fields[2 * i] = ids[i] .. 'f'
  end
  ex = CALL('HMGET', X, unpack(fields))
end
local rows, firsts, stamp = {}, {}, string.format('%d', now)
for i = 1, #ids do
  local first = ex[2 * i]
  if not first then
    first = stamp
    firsts[#firsts + 1] = ids[i] .. 'f'
    firsts[#firsts + 1] = stamp
  end
  local k = #rows
  rows[k + 1] = ids[i]
  rows[k + 2] = values[i]
  rows[k + 3] = counts[i]
  rows[k + 4] = first
  rows[k + 5] = ex[2 * i - 1] or false
end
if #firsts > 0 then
  many('HSET', X, firsts, 2)
  HASX = true
end
return {rows, MOVES}
