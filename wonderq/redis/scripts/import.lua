#!lua flags=allow-oom
-- Step 2 of a dead-letter move, on the dead-letter queue: take the message in (same id,
-- receive count 0) unless it is already here or this very move was already imported.
-- ARGV: slot, id, move token, stored body[, first SQS receive, attribute blob] (the SQS
-- extras travel with it). Returns 'ok', 'dup' or 'gone' (no such queue).
if CALL('EXISTS', A) == 0 then return 'gone' end
local id, token = ARGV[2], ARGV[3]
if CALL('HEXISTS', B, id) == 1 or CALL('HGET', I, id) == token then return 'dup' end
CALL('HSET', I, id, token)
if passed(ARGV[4], clock(), attrs().ret) then
  count_retention(1)  -- this queue's retention has passed since its publish: dropped here
  return 'ok'
end
CALL('HSET', B, id, ARGV[4])
CALL('HDEL', S, id)
if ARGV[5] and ARGV[5] ~= '' then CALL('HSET', X, id .. 'f', ARGV[5]) end
if ARGV[6] and ARGV[6] ~= '' then CALL('HSET', X, id, ARGV[6]) end
CALL('ZADD', R, 0, id)
wake()
return 'ok'
