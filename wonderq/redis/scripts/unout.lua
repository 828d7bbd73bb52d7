#!lua flags=allow-oom
-- Step 3 of a dead-letter move, on the source queue: the outbox entry goes; if the target
-- queue is gone the message comes back here, available. ARGV: slot, id, token, outcome.
local entry = CALL('HGET', O, ARGV[2])
if not entry then return 0 end
local dlq, token, body = string.match(entry, '^([^\n]*)\n([^\n]*)\n(.*)$')
if token ~= ARGV[3] then return 0 end
CALL('HDEL', O, ARGV[2])
if ARGV[4] == 'gone' and CALL('EXISTS', A) == 1 then
  CALL('HSET', B, ARGV[2], body)
  CALL('ZADD', R, 0, ARGV[2])
  wake()
end
return 1
