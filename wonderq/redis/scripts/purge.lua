#!lua flags=allow-oom
-- Drop every message of the queue (ready, leased, delayed) with its SQS extras.
-- ARGV: slot. Returns how many.
exists()
local n = CALL('ZCARD', R) + CALL('ZCARD', L) + CALL('ZCARD', D)
CALL('UNLINK', R, L, D, B, S, X)
return n
