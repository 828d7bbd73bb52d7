#!lua
-- Publish n messages (a batch is all or nothing). No allow-oom flag: past maxmemory Redis
-- refuses the script before it runs, which the store answers as 507.
-- ARGV: slot, n, then n x (delay_ms or -1, byte length, escaped body). Returns the first id.
local a = CALL('HMGET', A, 'mmb', 'delay')
if not a[1] then exists() end  -- every queue's attributes have mmb: no EXISTS needed
local mmb, qdelay = tonumber(a[1]), tonumber(a[2])
local n = tonumber(ARGV[2])
for i = 0, n - 1 do
  local len = tonumber(ARGV[4 + 3 * i])
  if len > mmb then
    fail('message_too_large', 'body is ' .. len .. ' bytes, more than max_message_bytes (' .. mmb .. ')')
  end
end
local now = clock()
local first = new_ids(now, n)
local bodies, ready, delayed = {}, {}, {}
local sent = string.format('%d', now) .. '|'  -- the publish time, kept with the body
for i = 0, n - 1 do
  local id = idstr(first + i)
  local delay = tonumber(ARGV[3 + 3 * i])
  if delay < 0 then delay = qdelay end
  bodies[#bodies + 1] = id
  bodies[#bodies + 1] = sent .. ARGV[5 + 3 * i]
  if delay > 0 then
    delayed[#delayed + 1] = now + delay
    delayed[#delayed + 1] = id
  else
    ready[#ready + 1] = 0
    ready[#ready + 1] = id
  end
end
many('HSET', B, bodies, 2)
if #ready > 0 then many('ZADD', R, ready, 2) end
if #delayed > 0 then many('ZADD', D, delayed, 2) end
CALL('HINCRBY', T, 'published', n)
if #ready > 0 then wake() end
return idstr(first)
