#!lua flags=allow-oom
-- Lease up to limit available messages, lowest ids first, after making due leases and
-- delays available (lazy expiry: correctness never waits for the sweeper).
-- ARGV: slot, cid, limit, visibility_ms (-1 = the queue's). Returns {answer, dead-letter moves}.
if not attrs().mmb then exists() end  -- every queue's attributes have mmb
local now = clock()
local cid, limit, vis = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local promoted = promote(now, math.max(1000, limit))
local a = attrs()
if vis < 0 then vis = a.vis end
local ids, values = take_ready(now, limit, a)
if #ids == 0 then
  -- Tell publishers someone may be waiting (long polls park after an empty receive).
  CALL('SET', W, '1', 'PX', 25000)
  return {'{"messages":[]}', MOVES}
end
if promoted > #ids and CALL('EXISTS', W) == 1 then CALL('SPUBLISH', CH, '1') end
local counts, texts = lease_to(ids, cid, now + vis)
return {answer(ids, values, counts, texts), MOVES}
