#!lua flags=allow-oom
-- Remove a queue from the registry (409 for default and for a queue in use as a dead-letter
-- queue), leaving a tombstone until its data is dropped (the drop can fail; the sweeper
-- finishes it). KEYS: queues, refs, tombstones. ARGV: name. Returns the version dropped.
local Q, REFS, DEAD = KEYS[1], KEYS[2], KEYS[3]
local name = ARGV[1]
local cur = redis.call('HGET', Q, name)
if not cur then
  return redis.error_reply("WQ queue_not_found queue '" .. name .. "' does not exist")
end
if name == 'default' then
  return redis.error_reply('WQ queue_in_use the default queue cannot be deleted')
end
if tonumber(redis.call('HGET', REFS, name) or '0') > 0 then
  return redis.error_reply("WQ queue_in_use queue '" .. name ..
                           "' is the dead_letter_queue of another queue")
end
local parts = {}
for part in string.gmatch(cur .. '|', '([^|]*)|') do parts[#parts + 1] = part end
local dlq, ver = parts[4], parts[7]
if dlq ~= '' then redis.call('HINCRBY', REFS, dlq, -1) end
redis.call('HDEL', REFS, name)
redis.call('HDEL', Q, name)
redis.call('HSET', DEAD, name, ver)
return ver
