#!lua flags=allow-oom
-- Ack: delete each id iff it is leased, the lease has not run out (now < deadline, on
-- Redis's clock) and it is the caller's: by consumer id (mode 'c') or by lease token, the
-- receive count that receive gave it (mode 't'). A repeated id fails the second time.
-- ARGV: slot, 'c', cid, ids... | slot, 't', id, receives, id, receives... | slot, 'p', id, cid,
-- id, cid... (the deletes of one event-loop turn, each with its cid). Returns 1/0 per id.
-- Five commands per call however many ids (deadlines, states, then the removals).
exists()
local now = clock()
local mode = ARGV[2]
local ids, expect = {}, {}
if mode == 'c' then
  for j = 4, #ARGV do ids[#ids + 1] = ARGV[j] end
else
  for j = 3, #ARGV, 2 do
    ids[#ids + 1] = ARGV[j]
    expect[#expect + 1] = ARGV[j + 1]
  end
end
local out, gone, seen = {}, {}, {}
if #ids > 0 then
  local deadlines = fetch('ZMSCORE', L, ids)
  local states = fetch('HMGET', S, ids)
  local cid = ARGV[3]
  for i = 1, #ids do
    local id, deadline, ok = ids[i], deadlines[i], 0
    if deadline and not seen[id] and now < tonumber(deadline) then
      local rc, c = string.match(states[i] or '', '^(%d+):(%d+)$')
      if (mode == 'c' and c == cid) or (mode == 't' and rc == expect[i])
         or (mode == 'p' and c == expect[i]) then
        ok = 1
        seen[id] = true
        gone[#gone + 1] = id
      end
    end
    out[i] = ok
  end
end
if #gone > 0 then
  many('ZREM', L, gone, 1)
  drop_all(gone)
  CALL('HINCRBY', T, 'deleted', #gone)
end
return out
