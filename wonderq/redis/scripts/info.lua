#!lua flags=allow-oom
-- Attributes, counts and totals of the queue (after making due leases and delays
-- available, so the counts are what a receive would see). ARGV: slot.
-- Returns {attributes (flat), ready, leased, delayed, totals (flat), outbox length}.
exists()
local now = clock()
local n = promote(now, 1000)
trim_head(now)
if n > 0 then wake() end
return {CALL('HGETALL', A), CALL('ZCARD', R), CALL('ZCARD', L), CALL('ZCARD', D),
        CALL('HGETALL', T), CALL('HLEN', O), MOVES}
