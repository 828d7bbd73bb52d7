#!lua flags=allow-oom
-- The next available messages, leasing and counting nothing (due leases and delays are
-- made available first, as a receive would). ARGV: slot, limit. Returns {answer, moves}.
exists()
local now = clock()
local limit = tonumber(ARGV[2])
promote(now, math.max(1000, limit))
local ids = CALL('ZRANGE', R, 0, limit - 1)
if #ids == 0 then return {'{"messages":[]}', MOVES} end
local bodies = CALL('HMGET', B, unpack(ids))
local states = CALL('HMGET', S, unpack(ids))
local counts = {}
for i = 1, #ids do counts[i] = receives_of(states[i]) end
return {answer(ids, bodies, counts), MOVES}
