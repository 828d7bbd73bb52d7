#!lua flags=allow-oom
-- The data half of a queue deletion (the registry already let it go), unless the queue was
-- created again since (a newer version). Parked receives are woken to answer [].
-- ARGV: slot, version. Returns the messages dropped.
local cur = tonumber(CALL('HGET', A, 'ver') or '0')
if cur > tonumber(ARGV[2]) then return 0 end
local n = CALL('ZCARD', R) + CALL('ZCARD', L) + CALL('ZCARD', D)
CALL('UNLINK', A, R, L, D, B, S, T, O, I, W, X)
CALL('SPUBLISH', CH, '0')
return n
