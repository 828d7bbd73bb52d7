#!lua
-- One SQS SendMessage: a publish (as publish.lua) with the message's attribute blob, kept
-- in X only when there is one. No allow-oom flag: past maxmemory Redis refuses the script
-- before it runs (507), the blob's bytes counted like the body's.
-- ARGV: slot, delay_ms or -1, byte length, escaped body[, attribute blob]. Returns the id.
local a = CALL('HMGET', A, 'mmb', 'delay')
exists()
local mmb, qdelay = tonumber(a[1]), tonumber(a[2])
local len, blob = tonumber(ARGV[3]), ARGV[5]
if len > mmb then
  fail('message_too_large', 'body is ' .. len .. ' bytes, more than max_message_bytes (' .. mmb .. ')')
end
if blob and #blob > mmb then
  fail('message_too_large', 'attributes are ' .. #blob .. ' bytes, more than max_message_bytes (' .. mmb .. ')')
end
local now = clock()
local id = idstr(new_ids(now, 1))
local delay = tonumber(ARGV[2])
if delay < 0 then delay = qdelay end
CALL('HSET', B, id, string.format('%d', now) .. '|' .. ARGV[4])
if blob and blob ~= '' then CALL('HSET', X, id, blob) end
if delay > 0 then
  CALL('ZADD', D, now + delay, id)
else
  CALL('ZADD', R, 0, id)
end
CALL('HINCRBY', T, 'published', 1)
if delay <= 0 then wake() end
return id
