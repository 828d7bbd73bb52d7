#!lua flags=allow-oom
-- Step 4 of a dead-letter move, on the dead-letter queue: the import marker of a finished
-- move goes. ARGV: slot, id, token.
if CALL('HGET', I, ARGV[2]) == ARGV[3] then CALL('HDEL', I, ARGV[2]) end
return 1
