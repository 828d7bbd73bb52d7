#!lua flags=no-writes,allow-oom
-- The engine's validation order for a publish that the store found bad before sending:
-- the queue first, then the batch, then per item what comes before the size check, the
-- size (which needs the queue's max_message_bytes), what comes after.
-- ARGV: slot, batch error ('' or 'code message'), n, then n x (error before, length, error after).
exists()
local function raise(e)
  local code, msg = string.match(e, '^(%S+) (.*)$')
  fail(code, msg)
end
if ARGV[2] ~= '' then raise(ARGV[2]) end
local mmb = attrs().mmb
for i = 0, tonumber(ARGV[3]) - 1 do
  local before, len, after = ARGV[4 + 3 * i], tonumber(ARGV[5 + 3 * i]), ARGV[6 + 3 * i]
  if before ~= '' then raise(before) end
  if len > mmb then
    fail('message_too_large', 'body is ' .. len .. ' bytes, more than max_message_bytes (' .. mmb .. ')')
  end
  if after ~= '' then raise(after) end
end
return 0
