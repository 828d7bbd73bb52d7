#!lua flags=allow-oom
-- The sweeper's pass over one queue: up to k due leases and delays become available,
-- messages past retention leave the head of ready, and parked receives on every front-end
-- are woken. Idempotent and clock-checked, so two sweepers only waste work.
-- ARGV: slot, k. Returns {processed, dead-letter moves, outbox length, next deadline or -1}.
if CALL('EXISTS', A) == 0 then return {-1, 0, 0, -1} end
local now = clock()
local k = tonumber(ARGV[2])
local n = promote(now, k)
n = n + trim_head(now)
if n > 0 then wake() end
local nl = CALL('ZRANGE', L, 0, 0, 'WITHSCORES')
local nd = CALL('ZRANGE', D, 0, 0, 'WITHSCORES')
local next_ms = -1
if #nl > 0 then next_ms = tonumber(nl[2]) end
if #nd > 0 and (next_ms < 0 or tonumber(nd[2]) < next_ms) then next_ms = tonumber(nd[2]) end
if next_ms >= 0 then next_ms = next_ms - now end
return {n, MOVES, CALL('HLEN', O), next_ms}
