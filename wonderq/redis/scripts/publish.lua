#!lua
-- Publish n messages (a batch is all or nothing). No allow-oom flag: past maxmemory Redis
-- refuses the script before it runs, which the store answers as 507.
-- ARGV: slot, n, then n x (delay_ms or -1, byte length, escaped body). Returns the first id.
-- n < 0: the -n single publishes of one event-loop turn, each on its own (a body too large
-- fails alone); returns per publish its id, or 'message_too_large <message>'.
local a = CALL('HMGET', A, 'mmb', 'delay')
if not a[1] then exists() end  -- every queue's attributes have mmb: no EXISTS needed
local mmb, qdelay = tonumber(a[1]), tonumber(a[2])
local n = tonumber(ARGV[2])
local apart = n < 0
if apart then n = -n end
local take, out = {}, {}
for i = 0, n - 1 do
  local len = tonumber(ARGV[4 + 3 * i])
  if len > mmb then
    local msg = 'body is ' .. len .. ' bytes, more than max_message_bytes (' .. mmb .. ')'
    if not apart then fail('message_too_large', msg) end
    out[i + 1] = 'message_too_large ' .. msg
  else
    take[#take + 1] = i
  end
end
if #take == 0 then return out end
local now = clock()
local first = new_ids(now, #take)
local bodies, ready, delayed = {}, {}, {}
local sent = string.format('%d', now) .. '|'  -- the publish time, kept with the body
for j = 1, #take do
  local i = take[j]
  local id = idstr(first + j - 1)
  local delay = tonumber(ARGV[3 + 3 * i])
  if delay < 0 then delay = qdelay end
  bodies[#bodies + 1] = id
  bodies[#bodies + 1] = sent .. ARGV[5 + 3 * i]
  if delay > 0 then
    delayed[#delayed + 1] = now + delay
    delayed[#delayed + 1] = id
  else
    ready[#ready + 1] = '0'
    ready[#ready + 1] = id
  end
  out[i + 1] = id
end
many('HSET', B, bodies, 2)
if #ready > 0 then many('ZADD', R, ready, 2) end
if #delayed > 0 then many('ZADD', D, delayed, 2) end
CALL('HINCRBY', T, 'published', #take)
if #ready > 0 then wake() end
if apart then return out end
return out[1]
