#!lua flags=allow-oom
-- Change a lease under the same rule as delete: timeout > 0 sets the deadline to now +
-- timeout (a heartbeat), 0 releases the message at once (available again, or moved to the
-- dead-letter outbox if it reached max_receives; not counted as expired).
-- ARGV: slot, 'c'|'t', cid|receives, id, timeout_ms. Returns {1|0, dead-letter moves}.
exists()
local now = clock()
local mode, who, id, timeout = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local deadline = CALL('ZSCORE', L, id)
if not deadline or now >= tonumber(deadline) then return {0, 0} end
local rc, c = string.match(CALL('HGET', S, id) or '', '^(%d+):(%d+)$')
if not ((mode == 'c' and c == who) or (mode == 't' and rc == who)) then return {0, 0} end
if timeout > 0 then
  CALL('ZADD', L, now + timeout, id)
else
  CALL('ZREM', L, id)
  end_leases({id}, now, false)
  if MOVES == 0 then wake() end
end
return {1, MOVES}
