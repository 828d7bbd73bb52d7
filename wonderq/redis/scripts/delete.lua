#!lua flags=allow-oom
-- Ack: delete each id iff it is leased, the lease has not run out (now < deadline, on
-- Redis's clock) and it is the caller's: by consumer id (mode 'c') or by lease token, the
-- receive count that receive gave it (mode 't'). A repeated id fails the second time.
-- ARGV: slot, 'c', cid, ids... | slot, 't', id, receives, id, receives...  Returns 1/0 per id.
exists()
local now = clock()
local mode = ARGV[2]
local out, n = {}, 0
local first, step = 4, 1
if mode == 't' then first, step = 3, 2 end
for j = first, #ARGV, step do
  local id = ARGV[j]
  local expect = (mode == 'c') and ARGV[3] or ARGV[j + 1]
  local ok = 0
  local deadline = CALL('ZSCORE', L, id)
  if deadline and now < tonumber(deadline) then
    local rc, c = string.match(CALL('HGET', S, id) or '', '^(%d+):(%d+)$')
    if (mode == 'c' and c == expect) or (mode == 't' and rc == expect) then
      CALL('ZREM', L, id)
      drop(id)
      ok = 1
      n = n + 1
    end
  end
  out[#out + 1] = ok
end
if n > 0 then CALL('HINCRBY', T, 'deleted', n) end
return out
