#!lua flags=allow-oom
-- Step 3 of a dead-letter move, on the source queue: the outbox entry goes; if the target
-- queue is gone the message comes back here, available. ARGV: slot, id, token, outcome.
local entry = CALL('HGET', O, ARGV[2])
if not entry then return 0 end
-- dlq, token, stored body (escaped: no newline), then the SQS extras if any.
local dlq, token, body, rest = string.match(entry, '^([^\n]*)\n([^\n]*)\n([^\n]*)(.*)$')
if token ~= ARGV[3] then return 0 end
CALL('HDEL', O, ARGV[2])
if ARGV[4] == 'gone' and CALL('EXISTS', A) == 1 then
  CALL('HSET', B, ARGV[2], body)
  local first, blob = string.match(rest, '^\n([^\n]*)\n(.*)$')
  if first and first ~= '' then CALL('HSET', X, ARGV[2] .. 'f', first) end
  if blob and blob ~= '' then CALL('HSET', X, ARGV[2], blob) end
  CALL('ZADD', R, 0, ARGV[2])
  wake()
end
return 1
